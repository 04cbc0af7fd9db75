// views/profile.js — a person's profile in a modal dialog (GET /v1/users/{user}), opened by
// clicking them (member lists, message authors, the people picker) or, for my own, the header's
// "Profile" button: display name, handle, role, title, time zone with the local time there now,
// the avatar URL as a link (the page's policy loads no picture from elsewhere: initials stand in),
// and whether the account is deactivated. Someone else's has "Message" (POST /v1/conversations);
// mine has "Edit profile" (views/profileform.js) and "Export my data" (a job: views/jobstatus.js).

import * as api from '../api.js';
import { h, setMessage } from '../dom.js';
import { safeHref } from '../format.js';
import { Dialog, cancelButton } from './dialog.js';
import { JobProgress } from './jobstatus.js';
import { ProfileForm } from './profileform.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member', guest: 'Guest', bot: 'Bot' };
const CLOCK_MS = 30_000;

export class ProfileDialog {
  /** `onOpened(conversation)`: "Message" opened a DM; the app shows it once listed. */
  constructor({ store, onOpened }) {
    Object.assign(this, { store, onOpened });
    this.userId = null;
    this.generation = 0;
    this.clock = 0;
    this.busy = false;

    this.dialog = new Dialog({ id: 'profile-dialog', labelledBy: 'profile-heading', className: 'dialog-wide' });
    this.initials = h('span', { class: 'avatar-initials', 'aria-hidden': 'true' });
    this.heading = h('h2', { id: 'profile-heading', tabindex: '-1', dataset: { test: 'profile-name' } });
    this.handle = h('p', { class: 'profile-handle', dataset: { test: 'profile-handle' } });
    this.status = h('p', { id: 'profile-status', class: 'profile-status', role: 'status' });
    this.details = h('dl', { class: 'profile-details', dataset: { test: 'profile-details' } });
    this.error = h('p', { id: 'profile-error', class: 'error', role: 'alert', hidden: true });
    this.message = h('button', { id: 'profile-message', type: 'button', class: 'primary', dataset: { test: 'profile-message' }, text: 'Message' });
    this.message.addEventListener('click', () => this.openConversation());
    this.edit = h('button', { id: 'profile-edit', type: 'button', dataset: { test: 'profile-edit' }, text: 'Edit profile' });
    this.edit.addEventListener('click', () => this.startEditing());
    const close = cancelButton(this.dialog);
    close.textContent = 'Close';
    close.dataset.test = 'profile-close';
    this.form = new ProfileForm({
      store,
      onSaved: (user) => this.saved(user),
      onCancel: () => this.stopEditing(),
    });
    this.exportButton = h('button', { id: 'export-mine', type: 'button', dataset: { test: 'export-mine' }, text: 'Export my data' });
    this.exportJob = new JobProgress({
      prefix: 'export-mine', start: () => api.exportMine(), trigger: this.exportButton, exportJob: true,
    });
    this.exportButton.addEventListener('click', () => this.exportJob.begin());
    this.exportSection = h('section', { class: 'profile-export', 'aria-labelledby': 'profile-export-heading' },
      h('h3', { id: 'profile-export-heading', text: 'Your data' }),
      h('p', { class: 'field-hint', text: 'A copy of your profile, the messages you sent, your channels, read markers, sessions and audit records, as one JSON file. It is prepared in the background and kept for 7 days.' }),
      this.exportButton,
      this.exportJob.element);
    this.actions = h('div', { class: 'dialog-actions profile-actions' }, this.edit, this.message, close);
    this.body = h('div', { class: 'profile', dataset: { test: 'profile' } },
      h('div', { class: 'profile-top' }, this.initials, h('div', { class: 'profile-names' }, this.heading, this.handle)),
      this.status, this.details, this.error, this.actions, this.form.element, this.exportSection);
    this.dialog.body.append(this.body);
    this.dialog.onClose = () => {
      clearInterval(this.clock);
      this.generation += 1;
      this.form.hide();
    };
  }

  get element() {
    return this.dialog.el;
  }

  get isMine() {
    return this.store.isMe(this.userId);
  }

  /** Shows person `userId` (what is known at once, then the server's answer). */
  open(userId, opener) {
    if (!Number.isSafeInteger(userId) || userId <= 0) return;
    const generation = ++this.generation;
    if (this.userId !== userId) this.form.hide();
    this.userId = userId;
    setMessage(this.error, '');
    this.render(this.store.users.get(userId) ?? null);
    this.status.textContent = 'Loading…';
    if (!this.dialog.open(opener, this.heading)) return;
    clearInterval(this.clock);
    this.clock = setInterval(() => this.tick(), CLOCK_MS);
    this.load(userId, generation);
  }

  close(options) {
    this.dialog.close(options);
  }

  /** The app is going away: an export being followed stops. */
  stop() {
    this.exportJob.stop();
    clearInterval(this.clock);
  }

  async load(userId, generation) {
    let user;
    try {
      user = await api.getUser(userId);
    } catch (error) {
      if (generation !== this.generation) return;
      this.status.textContent = error.status === 404
        ? 'This person does not exist, or you may not see them.'
        : `Could not load the profile: ${error.message}`;
      return;
    }
    if (generation !== this.generation) return;
    const renamed = this.store.users.get(userId)?.display_name !== user?.display_name;
    this.store.setUser(user);
    if (this.store.isMe(user?.id)) this.store.setMe(user);
    // Others see profile changes on their next read (no live event): names shown elsewhere follow.
    if (renamed) this.store.emit('people');
    this.status.textContent = '';
    this.render(this.store.users.get(userId) ?? user);
  }

  // The local time moves on: the details again, unless someone is on a link there.
  tick() {
    if (this.details.contains(document.activeElement)) return;
    this.details.replaceChildren(...this.detailRows(this.store.users.get(this.userId) ?? null));
  }

  render(user) {
    const mine = this.isMine;
    const name = user?.display_name || `user ${this.userId}`;
    this.body.dataset.user = String(this.userId);
    setText(this.heading, name);
    setText(this.initials, initials(name));
    setText(this.handle, typeof user?.handle === 'string' ? `@${user.handle}` : '');
    this.details.replaceChildren(...this.detailRows(user));
    this.edit.hidden = !mine;
    this.exportSection.hidden = !mine;
    // Nobody writes to themselves, a deactivated account or a bot (bots are not DM partners).
    this.message.hidden = mine || !user || user.deactivated === true || user.role === 'bot';
    this.message.textContent = 'Message';
  }

  detailRows(user) {
    if (!user) return [];
    const rows = [];
    if (user.role) rows.push(detail('Role', ROLE_LABEL[user.role] ?? String(user.role), 'profile-role'));
    if (user.title) rows.push(detail('Title', String(user.title), 'profile-job-title'));
    if (user.time_zone) rows.push(detail('Time zone', zoneText(String(user.time_zone)), 'profile-zone'));
    const href = typeof user.avatar_url === 'string' ? safeHref(user.avatar_url) : null;
    if (href) {
      rows.push(detail('Avatar', h('a', {
        href, rel: 'noopener noreferrer nofollow', target: '_blank', class: 'profile-avatar-link', text: user.avatar_url,
      }), 'profile-avatar'));
    }
    if (typeof user.email === 'string' && user.email) rows.push(detail('Email', user.email, 'profile-email'));
    if (user.deactivated) rows.push(detail('Status', 'Deactivated: this account can no longer sign in.', 'profile-deactivated'));
    return rows;
  }

  startEditing() {
    if (!this.isMine) return;
    this.form.show(this.store.users.get(this.userId) ?? this.store.me);
  }

  stopEditing() {
    this.form.hide();
    this.edit.focus();
  }

  saved(user) {
    this.render(this.store.users.get(user?.id) ?? user);
    this.status.textContent = 'Your profile was saved.';
    this.edit.focus();
  }

  async openConversation() {
    const userId = this.userId;
    if (this.busy || !Number.isSafeInteger(userId)) return;
    this.busy = true;
    this.message.setAttribute('aria-disabled', 'true');
    this.message.textContent = 'Opening…';
    setMessage(this.error, '');
    try {
      const conversation = await api.openConversation([userId]);
      this.close({ restoreFocus: false });
      this.onOpened(conversation);
    } catch (error) {
      setMessage(this.error, error.status === 404
        ? 'Could not open the conversation: this person is deactivated, or not someone you may write to.'
        : `Could not open the conversation: ${error.message}`);
    } finally {
      this.busy = false;
      this.message.removeAttribute('aria-disabled');
      this.message.textContent = 'Message';
    }
  }
}

/** One <div><dt><dd></div> of the details list. */
function detail(term, value, test) {
  return h('div', { class: 'profile-detail', dataset: { test } }, h('dt', { text: term }), h('dd', null, value));
}

/** "Europe/London · 14:05 there (Tue)"; a zone this browser does not know says so. */
function zoneText(zone) {
  let local = null;
  try {
    local = new Intl.DateTimeFormat(undefined, { timeZone: zone, weekday: 'short', hour: 'numeric', minute: '2-digit' })
      .format(new Date());
  } catch {
    local = null;
  }
  return [
    zone,
    local
      ? h('span', { class: 'profile-local-time', dataset: { test: 'profile-local-time' }, text: ` · ${local} there now` })
      : h('span', { class: 'profile-local-time unknown', dataset: { test: 'profile-local-time' }, text: ' (a time zone this browser does not know)' }),
  ];
}

/** "Ada Lovelace" → "AL"; one letter for one word. */
function initials(name) {
  const words = String(name).trim().split(/\s+/u).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words.at(-1)] : words.slice(0, 1);
  return letters.map((word) => [...word][0] ?? '').join('').toUpperCase();
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
