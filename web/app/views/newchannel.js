// views/newchannel.js — the "New channel" form (POST /v1/channels), in a modal dialog. The name
// rule is shown as a hint, but the server decides: its message (400 invalid_field naming `name`,
// 409 conflict when the name is taken, 403 for guests) is shown as it comes.

import * as api from '../api.js';
import { field, h, setMessage } from '../dom.js';
import { Dialog, cancelButton } from './dialog.js';

const KIND_HINT = {
  public: 'Anyone in the org can find and join it.',
  private: 'Only people added to it can see it; someone inside adds others.',
};

export class NewChannelForm {
  /** `onCreated(channel)`: the 201 answer; the app opens the channel once it is listed. */
  constructor({ onCreated }) {
    this.onCreated = onCreated;
    this.busy = false;
    this.name = field('new-channel-name', 'Name', {
      type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', placeholder: 'e.g. release-notes',
    }, 'Lower-case letters a–z, digits 0–9, - and _; up to 80 characters, starting with a letter or digit.');
    this.kind = field('new-channel-kind', 'Visibility', { tag: 'select' }, KIND_HINT.public);
    this.kind.input.append(
      h('option', { value: 'public', text: 'Public', selected: true }),
      h('option', { value: 'private', text: 'Private' }));
    this.kind.input.addEventListener('change', () => {
      this.kind.el.querySelector('.field-hint').textContent = KIND_HINT[this.kind.input.value] ?? '';
    });
    this.error = h('p', { id: 'new-channel-error', class: 'error', role: 'alert', hidden: true });
    this.name.input.setAttribute('aria-describedby', 'new-channel-name-hint new-channel-error');
    this.submitButton = h('button', { id: 'new-channel-submit', type: 'submit', class: 'primary', text: 'Create channel' });
    this.dialog = new Dialog({ id: 'new-channel-dialog', labelledBy: 'new-channel-heading' });
    this.form = h('form', { id: 'new-channel-form', class: 'dialog-form', novalidate: true },
      h('h2', { id: 'new-channel-heading', text: 'New channel' }),
      this.name.el, this.kind.el, this.error,
      h('div', { class: 'dialog-actions' }, cancelButton(this.dialog), this.submitButton));
    this.dialog.body.append(this.form);
    this.dialog.onClose = () => this.reset();
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.name.input.addEventListener('input', () => {
      if (this.error.textContent) this.showError('');
    });
  }

  get element() {
    return this.dialog.el;
  }

  open(opener) {
    this.reset();
    this.dialog.open(opener, this.name.input);
  }

  close(options) {
    this.dialog.close(options);
  }

  reset() {
    this.name.input.value = '';
    this.kind.input.value = 'public';
    this.kind.el.querySelector('.field-hint').textContent = KIND_HINT.public;
    this.showError('');
  }

  showError(text) {
    setMessage(this.error, text);
    if (text) this.name.input.setAttribute('aria-invalid', 'true');
    else this.name.input.removeAttribute('aria-invalid');
  }

  async submit() {
    if (this.busy) return;
    // Surrounding spaces are never meant; anything else is sent as typed, for the server to judge.
    const name = this.name.input.value.trim();
    if (!name) {
      this.showError('Give the channel a name.');
      this.name.input.focus();
      return;
    }
    this.busy = true;
    this.submitButton.setAttribute('aria-disabled', 'true');
    this.submitButton.textContent = 'Creating…';
    try {
      const channel = await api.createChannel(name, this.kind.input.value);
      this.close({ restoreFocus: false });
      this.onCreated(channel);
    } catch (error) {
      this.showError(describe(error));
      this.name.input.focus();
    } finally {
      this.busy = false;
      this.submitButton.removeAttribute('aria-disabled');
      this.submitButton.textContent = 'Create channel';
    }
  }
}

// The server's message names what was wrong (the name rule, a taken name, a guest's role).
function describe(error) {
  return `Could not create the channel: ${error.message || `the server answered ${error.status}`}`;
}
