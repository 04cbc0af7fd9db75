// views/dialog.js — a modal <dialog> for the small forms (new channel, new message, leaving a
// private channel). showModal() keeps Tab inside it and makes the rest of the page inert; Escape
// (the dialog's own `cancel`), its Cancel button and a click on the backdrop close it (unless
// `closeOnBackdrop` is false: the dialog showing a secret once), and focus goes back to the
// control that opened it.

import { h } from '../dom.js';

export class Dialog {
  /** `labelledBy`: the id of the heading inside `children` that names the dialog. */
  constructor({ id, labelledBy, className = '', closeOnBackdrop = true }, ...children) {
    // The body fills the dialog: a click whose target is the dialog itself was on the backdrop.
    this.body = h('div', { class: 'dialog-body' }, ...children);
    this.el = h('dialog', { id, class: `dialog ${className}`.trim(), 'aria-labelledby': labelledBy }, this.body);
    this.opener = null;
    this.restoreFocus = true;
    this.onClose = null;
    let pressedOnBackdrop = false;
    this.el.addEventListener('pointerdown', (event) => { pressedOnBackdrop = event.target === this.el; });
    this.el.addEventListener('click', (event) => {
      // Pressed in a field and released beside it is a text selection, not a click outside.
      if (closeOnBackdrop && event.target === this.el && pressedOnBackdrop) this.close();
    });
    this.el.addEventListener('close', () => this.closed());
  }

  get isOpen() {
    return this.el.open;
  }

  /** Opens it (it must be in the document) and focuses `focusEl`; `opener` gets focus back. */
  open(opener, focusEl) {
    this.opener = opener ?? (document.activeElement instanceof HTMLElement ? document.activeElement : null);
    this.restoreFocus = true;
    if (!this.el.isConnected) return false;
    if (!this.el.open) this.el.showModal();
    focusEl?.focus();
    return true;
  }

  /** Closes it; with `restoreFocus: false` the caller moves focus (e.g. to an opened channel). */
  close({ restoreFocus = true } = {}) {
    this.restoreFocus = restoreFocus;
    if (this.el.open) this.el.close();
  }

  closed() {
    const opener = this.opener;
    this.opener = null;
    if (this.restoreFocus && opener?.isConnected && !opener.closest('[hidden], [inert]')) opener.focus();
    this.restoreFocus = true;
    this.onClose?.();
  }
}

/** The Cancel button of a dialog's form. */
export function cancelButton(dialog) {
  const button = h('button', { type: 'button', class: 'dialog-cancel', text: 'Cancel' });
  button.addEventListener('click', () => dialog.close());
  return button;
}
