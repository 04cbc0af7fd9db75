// views/composer.js — the message box: Enter sends, Shift+Enter adds a line, the body is checked
// against limits.max_body_bytes in UTF-8 bytes before it goes out (the text stays in the box
// when refused), and each channel keeps its own draft.

import { h, setMessage } from '../dom.js';
import { utf8Length } from '../format.js';

export class Composer {
  constructor({ store, onSend, onTyping }) {
    Object.assign(this, { store, onSend, onTyping });
    this.channelId = null;
    this.drafts = new Map();
    this.label = h('label', { for: 'composer', class: 'visually-hidden', text: 'Message' });
    this.textarea = h('textarea', {
      id: 'composer', rows: 2, autocomplete: 'off', 'aria-describedby': 'composer-error composer-hint',
    });
    this.button = h('button', { id: 'send-button', type: 'submit', class: 'primary', text: 'Send' });
    this.error = h('p', { id: 'composer-error', class: 'error', role: 'alert', hidden: true });
    this.hint = h('p', { id: 'composer-hint', class: 'visually-hidden', text: 'Enter sends, Shift+Enter adds a new line.' });
    this.form = h('form', { id: 'composer-form', class: 'composer', novalidate: true },
      this.label,
      h('div', { class: 'composer-row' }, this.textarea, this.button),
      this.hint,
      this.error);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.textarea.addEventListener('keydown', (event) => this.keydown(event));
    this.textarea.addEventListener('input', () => this.input());
  }

  /** Shows the composer for a channel, saving the previous channel's draft. */
  show(ch) {
    if (this.channelId !== null) this.drafts.set(this.channelId, this.textarea.value);
    this.channelId = ch.id;
    this.textarea.value = this.drafts.get(ch.id) ?? '';
    this.label.textContent = `Message ${this.store.channelLabel(ch)}`;
    setMessage(this.error, '');
  }

  relabel(ch) {
    if (ch.id === this.channelId) this.label.textContent = `Message ${this.store.channelLabel(ch)}`;
  }

  keydown(event) {
    // isComposing: Enter that confirms an IME composition must not send.
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    this.submit();
  }

  input() {
    if (this.error.textContent && !this.tooLong(this.textarea.value)) setMessage(this.error, '');
    if (this.textarea.value.trim()) this.onTyping(this.channelId);
  }

  tooLong(text) {
    return utf8Length(text) > this.limit();
  }

  limit() {
    return Number(this.store.limits?.max_body_bytes) || 16_384;
  }

  submit() {
    const body = tidy(this.textarea.value);
    if (!body.trim() || this.channelId === null) return; // nothing to send
    if (body.includes('\u0000')) {
      setMessage(this.error, 'Message contains a character that cannot be sent (U+0000).');
      return;
    }
    const bytes = utf8Length(body);
    if (bytes > this.limit()) {
      this.showTooLong(bytes);
      return;
    }
    setMessage(this.error, '');
    this.textarea.value = '';
    this.drafts.delete(this.channelId);
    this.onSend(this.channelId, body);
  }

  showTooLong(bytes) {
    setMessage(this.error, `Message is too long (${bytes} bytes; the limit is ${this.limit()}).`);
  }

  /** The server refused a body as too large: give the text back, with the error. */
  bounce(channelId, body) {
    if (channelId === this.channelId) {
      if (!this.textarea.value) this.textarea.value = body;
      this.showTooLong(utf8Length(body));
      this.textarea.focus();
    } else if (!this.drafts.get(channelId)) {
      this.drafts.set(channelId, body);
    }
  }

  /** Focuses the message box; false when it is disabled (no channel to write in). */
  focus() {
    if (this.textarea.disabled) return false;
    this.textarea.focus();
    return true;
  }

  setEnabled(enabled) {
    this.textarea.disabled = !enabled;
    this.button.disabled = !enabled;
  }
}

// Blank lines around a message are never meant; inner whitespace (indentation) is kept.
function tidy(text) {
  return text.replace(/^(?:[ \t]*\r?\n)+/, '').replace(/\s+$/u, '');
}
