// views/channelsettings.js — the channel header's "Channel settings" button and its dialog: rename,
// topic and purpose (PATCH /v1/channels/{id}, only the fields that changed; "" clears a topic or
// purpose), Archive (after a confirmation) and Unarchive (POST …/archive, …/unarchive). Shown
// for public and private channels to owners and admins, and to members in the channels they
// created; the server decides anyway, and its refusal is shown in words (403 forbidden, 409
// default_channel for #general, not_a_channel, archived, conflict for a taken name).

import * as api from '../api.js';
import { field, h, setMessage } from '../dom.js';
import { Dialog, cancelButton } from './dialog.js';

export class ChannelSettings {
  /** `onUnarchived(channel)`: back in use; the channel list is read again to list it. */
  constructor({ store, onUnarchived }) {
    Object.assign(this, { store, onUnarchived });
    this.channel = null;
    this.base = null; // { name, topic, purpose } the form started from
    this.busy = false;

    this.button = h('button', {
      id: 'channel-settings', type: 'button', class: 'channel-settings-button', hidden: true,
      dataset: { test: 'channel-settings' }, text: 'Channel settings',
    });
    this.button.addEventListener('click', () => this.open(this.button));

    this.dialog = new Dialog({ id: 'channel-settings-dialog', labelledBy: 'channel-settings-heading', className: 'dialog-wide' });
    this.heading = h('h2', { id: 'channel-settings-heading', text: 'Channel settings' });
    this.name = field('channel-settings-name', 'Name', { type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none' },
      'Lower-case letters a–z, digits 0–9, - and _; up to 80 characters. #general keeps its name.');
    this.topic = field('channel-settings-topic', 'Topic', { type: 'text', autocomplete: 'off', maxlength: 250 },
      'Shown under the channel name (up to 250 characters). Leave empty to clear it.');
    this.purpose = field('channel-settings-purpose', 'Purpose', { tag: 'textarea', rows: 3, maxlength: 250 },
      'What the channel is for (up to 250 characters). Leave empty to clear it.');
    this.name.input.dataset.test = 'channel-settings-name';
    this.topic.input.dataset.test = 'channel-settings-topic';
    this.purpose.input.dataset.test = 'channel-settings-purpose';
    this.status = h('p', { id: 'channel-settings-status', class: 'dialog-status', role: 'status' });
    this.error = h('p', { id: 'channel-settings-error', class: 'error', role: 'alert', hidden: true, dataset: { test: 'channel-settings-error' } });
    this.save = h('button', { id: 'channel-settings-save', type: 'submit', class: 'primary', dataset: { test: 'channel-settings-save' }, text: 'Save changes' });
    this.archive = h('button', { id: 'channel-archive', type: 'button', class: 'danger', dataset: { test: 'channel-archive' }, text: 'Archive channel' });
    this.archive.addEventListener('click', () => this.askArchive());
    this.unarchive = h('button', { id: 'channel-unarchive', type: 'button', dataset: { test: 'channel-unarchive' }, text: 'Unarchive channel' });
    this.unarchive.addEventListener('click', () => this.setArchived(false));
    this.lifecycleText = h('p', { id: 'channel-lifecycle-text', class: 'field-hint' });
    this.form = h('form', { id: 'channel-settings-form', class: 'dialog-form', novalidate: true },
      this.heading, this.name.el, this.topic.el, this.purpose.el, this.status, this.error,
      h('div', { class: 'dialog-actions' }, cancelButton(this.dialog), this.save),
      h('section', { class: 'channel-lifecycle', 'aria-labelledby': 'channel-lifecycle-heading' },
        h('h3', { id: 'channel-lifecycle-heading', text: 'Archive' }),
        this.lifecycleText,
        h('div', { class: 'inline-row' }, this.archive, this.unarchive)));
    this.dialog.body.append(this.form);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });

    this.confirm = new Dialog({ id: 'archive-dialog', labelledBy: 'archive-heading' });
    this.confirmHeading = h('h2', { id: 'archive-heading', text: 'Archive this channel?' });
    this.confirmText = h('p', { id: 'archive-text' });
    this.confirmCancel = cancelButton(this.confirm);
    const confirmForm = h('form', { id: 'archive-form', class: 'dialog-form', novalidate: true },
      this.confirmHeading, this.confirmText,
      h('div', { class: 'dialog-actions' }, this.confirmCancel,
        h('button', { id: 'archive-confirm', type: 'submit', class: 'primary danger', dataset: { test: 'channel-archive-confirm' }, text: 'Archive' })));
    this.confirm.body.append(confirmForm);
    this.confirm.el.setAttribute('aria-describedby', 'archive-text');
    confirmForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.confirm.close({ restoreFocus: false });
      this.setArchived(true);
    });
  }

  /** The modal dialogs this view owns (they go into the page, after main). */
  get dialogs() {
    return [this.dialog.el, this.confirm.el];
  }

  closeDialogs() {
    this.confirm.close({ restoreFocus: false });
    this.dialog.close({ restoreFocus: false });
  }

  /** Whether I may be allowed to change `ch` (the server has the last word). */
  mayManage(ch) {
    if (!ch || (ch.kind !== 'public' && ch.kind !== 'private')) return false;
    const role = this.store.me?.role;
    if (role === 'owner' || role === 'admin') return true;
    return role === 'member' && ch.createdBy !== null && this.store.isMe(ch.createdBy);
  }

  /** The open channel (or none) and its details: the button shows when it may help. */
  show(ch) {
    if (this.channel && ch?.id !== this.channel.id) this.closeDialogs();
    this.channel = ch;
    this.button.hidden = !this.mayManage(ch);
    if (ch && this.dialog.isOpen) this.refreshFields(ch);
  }

  open(opener) {
    const ch = this.channel;
    if (!ch) return;
    this.base = null;
    this.refreshFields(ch);
    setMessage(this.error, '');
    this.status.textContent = '';
    this.dialog.open(opener, this.name.input);
    // The newest details (another admin may have changed them): fields not edited yet follow.
    api.getChannel(ch.id).then((info) => {
      if (this.channel?.id === ch.id) this.store.applyChannelInfo(ch.id, info, { read: true });
    }, () => { /* the store's details stand */ });
  }

  /** Fills the fields from the channel; a field someone already edited keeps their text. */
  refreshFields(ch) {
    const next = { name: ch.name ?? '', topic: ch.topic ?? '', purpose: ch.purpose ?? '' };
    for (const key of ['name', 'topic', 'purpose']) {
      const input = this[key].input;
      if (!this.base || input.value === this.base[key]) input.value = next[key];
    }
    this.base = next;
    const label = this.store.channelLabel(ch);
    this.heading.textContent = `Settings of ${label}`;
    this.archive.hidden = ch.archived;
    this.unarchive.hidden = !ch.archived;
    this.lifecycleText.textContent = ch.archived
      ? `${label} is archived: read-only, out of everyone's channel list. Unarchiving gives it back to its members.`
      : `Archiving makes ${label} read-only and takes it out of everyone's channel list; its history stays readable by its members.`;
  }

  /** Only the fields that changed; "" clears a topic or purpose. */
  changes() {
    const changes = {};
    const name = this.name.input.value.trim();
    if (name !== (this.base?.name ?? '')) changes.name = name;
    for (const key of ['topic', 'purpose']) {
      const value = this[key].input.value.trim();
      if (value !== (this.base?.[key] ?? '')) changes[key] = value;
    }
    return changes;
  }

  async submit() {
    const ch = this.channel;
    if (this.busy || !ch) return;
    const changes = this.changes();
    if (changes.name === '') {
      this.fail('Give the channel a name.', this.name.input);
      return;
    }
    if (!Object.keys(changes).length) {
      this.status.textContent = 'Nothing changed: there is nothing to save.';
      return;
    }
    await this.run(this.save, 'Saving…', async () => {
      const answer = await api.updateChannel(ch.id, changes);
      this.store.applyChannelInfo(ch.id, answer?.channel);
      this.dialog.close();
    }, (error) => `Could not save the settings of ${this.store.channelLabel(ch)}: ${error.message}`,
    changes.name !== undefined ? this.name.input : null);
  }

  askArchive() {
    const ch = this.channel;
    if (!ch || this.busy) return;
    const label = this.store.channelLabel(ch);
    this.confirmHeading.textContent = `Archive ${label}?`;
    this.confirmText.textContent = `${label} becomes read-only and leaves everyone's channel list: nobody can post in it or join it. Its members can still read its history, and it can be unarchived later.`;
    // Focus on Cancel: Enter on a focused dialog should not be the consequential choice.
    this.confirm.open(this.archive, this.confirmCancel);
  }

  async setArchived(archived) {
    const ch = this.channel;
    if (!ch || this.busy) return;
    const button = archived ? this.archive : this.unarchive;
    const label = this.store.channelLabel(ch);
    await this.run(button, archived ? 'Archiving…' : 'Unarchiving…', async () => {
      const answer = archived ? await api.archiveChannel(ch.id) : await api.unarchiveChannel(ch.id);
      this.store.applyChannelInfo(ch.id, { ...answer?.channel, archived });
      this.dialog.close();
      if (!archived) this.onUnarchived(ch);
    }, (error) => `Could not ${archived ? 'archive' : 'unarchive'} ${label}: ${error.message}`, button);
  }

  /** Runs one request with `button` marked busy; a failure shows `describe(error)`. */
  async run(button, busyText, request, describe, focusOnError) {
    const text = button.textContent;
    this.busy = true;
    button.setAttribute('aria-disabled', 'true');
    button.textContent = busyText;
    setMessage(this.error, '');
    this.status.textContent = '';
    try {
      await request();
    } catch (error) {
      this.fail(describe(error), focusOnError);
    } finally {
      this.busy = false;
      button.removeAttribute('aria-disabled');
      button.textContent = text;
    }
  }

  fail(text, input) {
    setMessage(this.error, text);
    if (this.dialog.isOpen) (input ?? this.name.input).focus();
  }
}
