// views/erase.js — "Erase…" on a row of the admin people table (owners, not on themselves): a
// modal dialog that says the erasure is irreversible and what the org's erasure policy does to
// messages, asks for the person's handle to be typed, then POST /v1/users/{id}/erase (202 with a
// job: the person is deactivated at once) and follows the job until it is done — its summary,
// one "kind: outcome" line per kind of data — or failed, with the server's words.

import * as api from '../api.js';
import { field, h, setMessage } from '../dom.js';
import { Dialog, cancelButton } from './dialog.js';
import { JobProgress } from './jobstatus.js';
import { policySentence } from './datarights.js';

export class EraseDialog {
  /**
   * `policy()`: the erasure policy as known ('anonymise' | 'delete' | null); `onStarted(user)`:
   * the job was accepted; `onFinished(user, job)`: it is done or failed.
   */
  constructor({ policy, onStarted, onFinished }) {
    Object.assign(this, { policy, onStarted, onFinished });
    this.user = null;
    this.job = null; // the JobProgress of the erasure shown
    this.jobs = new Set(); // every erasure still followed (one may go on after its dialog closed)

    this.dialog = new Dialog({ id: 'erase-dialog', labelledBy: 'erase-heading', className: 'dialog-wide' });
    this.heading = h('h2', { id: 'erase-heading', text: 'Erase this person?' });
    this.text = h('p', { id: 'erase-text' });
    this.policyText = h('p', { id: 'erase-policy-text', class: 'erase-policy', dataset: { test: 'erase-policy-text' } });
    this.handle = field('erase-confirm-handle', 'Type the handle to confirm', {
      type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none',
    });
    this.handle.input.dataset.test = 'erase-confirm-handle';
    this.error = h('p', { id: 'erase-error', class: 'error', role: 'alert', hidden: true });
    this.handle.input.setAttribute('aria-describedby', 'erase-error');
    this.submitButton = h('button', { id: 'erase-confirm', type: 'submit', class: 'primary danger', dataset: { test: 'erase-confirm' }, text: 'Erase' });
    this.cancel = cancelButton(this.dialog);
    this.confirmPart = h('div', { class: 'erase-confirm' }, this.handle.el, this.error);
    this.progress = h('div', { class: 'erase-progress', hidden: true });
    this.form = h('form', { id: 'erase-form', class: 'dialog-form', novalidate: true },
      this.heading, this.text, this.policyText, this.confirmPart, this.progress,
      h('div', { class: 'dialog-actions' }, this.cancel, this.submitButton));
    this.dialog.body.append(this.form);
    this.dialog.el.setAttribute('aria-describedby', 'erase-text erase-policy-text');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  get element() {
    return this.dialog.el;
  }

  close(options) {
    this.dialog.close(options);
  }

  /** The app is going away: no erasure is followed any more. */
  stop() {
    for (const job of this.jobs) job.stop();
    this.jobs.clear();
  }

  /** Asks before erasing `user` (focus in the handle field). */
  open(user, opener) {
    this.user = user;
    this.job = null;
    const name = user.display_name || `user ${user.id}`;
    this.heading.textContent = `Erase ${name}?`;
    this.text.textContent = `This cannot be undone. ${name} is deactivated at once and signed out everywhere; then their profile (handle, name, email, title, time zone, avatar), sessions, read markers and pending invites are erased, and the audit log keeps its records without their address.`;
    this.policyText.textContent = policySentence(this.policy());
    this.handle.el.querySelector('label').textContent = `Type ${user.handle} to confirm`;
    this.handle.input.value = '';
    this.handle.input.removeAttribute('aria-invalid');
    setMessage(this.error, '');
    this.confirmPart.hidden = false;
    this.submitButton.hidden = false;
    this.cancel.textContent = 'Cancel';
    this.progress.hidden = true;
    this.progress.replaceChildren();
    this.dialog.open(opener, this.handle.input);
  }

  submit() {
    const user = this.user;
    if (!user || this.job) return;
    if (this.handle.input.value.trim() !== user.handle) {
      setMessage(this.error, `Type ${user.handle} exactly to confirm the erasure.`);
      this.handle.input.setAttribute('aria-invalid', 'true');
      this.handle.input.focus();
      return;
    }
    this.handle.input.removeAttribute('aria-invalid');
    setMessage(this.error, '');
    const job = new JobProgress({
      prefix: 'erase',
      start: () => api.eraseUser(user.id),
      trigger: this.submitButton,
      onStarted: () => this.started(job, user),
      onFinished: (done) => {
        this.jobs.delete(job);
        this.onFinished(user, done);
      },
    });
    this.job = job;
    this.jobs.add(job);
    this.progress.replaceChildren(job.element);
    this.progress.hidden = false;
    job.begin().then(() => {
      if (job.job) return;
      // Refused before it started (e.g. 409: already erased): the form stays, to cancel.
      this.jobs.delete(job);
      if (this.job === job) this.job = null;
    });
  }

  started(job, user) {
    if (this.job === job) {
      this.confirmPart.hidden = true;
      this.submitButton.hidden = true;
      this.cancel.textContent = 'Close';
      this.cancel.focus();
    }
    this.onStarted(user);
  }
}
