// views/datarights.js — the admin screen's "Data rights" (docs/api.md, Data rights): the org's
// erasure policy (GET /v1/org/erasure-policy; owners change it with PUT, admins only read it)
// and, for owners, "Export the org" (POST /v1/org/export, a job followed until its document can
// be downloaded: views/jobstatus.js). Erasing a person starts from the people table (views/erase.js).

import * as api from '../api.js';
import { h, setMessage } from '../dom.js';
import { JobProgress } from './jobstatus.js';

export const POLICIES = [
  ['anonymise', 'Anonymise their messages',
    'Their messages stay in the conversations they were part of, shown as written by “Erased user”.'],
  ['delete', 'Delete their messages',
    'Their messages are deleted everywhere: history, search and the message stream; conversations go on without them.'],
];

/** The sentence that says what an erasure does to messages under `policy`. */
export function policySentence(policy) {
  const entry = POLICIES.find(([value]) => value === policy);
  return entry ? entry[2] : 'What happens to their messages is decided by the org’s erasure policy.';
}

export class DataRights {
  /** `onChanged()`: an action here succeeded (it is in the audit log). */
  constructor({ store, onChanged }) {
    Object.assign(this, { store, onChanged });
    this.policy = null; // 'anonymise' | 'delete' once loaded
    this.refs = null;
    this.run = 0;
    this.exportButton = h('button', { id: 'org-export', type: 'button', dataset: { test: 'export-org' }, text: 'Export the org' });
    this.exportJob = new JobProgress({
      prefix: 'export-org', start: () => api.exportOrg(), trigger: this.exportButton, exportJob: true,
      onFinished: () => this.onChanged(),
    });
    this.exportButton.addEventListener('click', () => this.exportJob.begin());
  }

  get isOwner() {
    return this.store.me?.role === 'owner';
  }

  /** The app is going away: an export being followed stops. */
  stop() {
    this.exportJob.stop();
  }

  /** Builds the section (owners and admins) and loads the policy; returns the section. */
  render() {
    const owner = this.isOwner;
    const radios = POLICIES.map(([value, label, sentence]) => {
      const id = `erasure-policy-${value}`;
      const input = h('input', {
        id, type: 'radio', name: 'erasure-policy', value, disabled: !owner, 'aria-describedby': `${id}-hint`,
        dataset: { test: `erasure-policy-${value}` },
      });
      return h('div', { class: 'policy-choice' },
        h('div', { class: 'check' }, input, h('label', { for: id, text: label })),
        h('p', { id: `${id}-hint`, class: 'field-hint', text: sentence }));
    });
    const save = owner
      ? h('button', { id: 'erasure-policy-save', type: 'submit', dataset: { test: 'erasure-policy-save' }, text: 'Save policy' })
      : null;
    this.refs = {
      form: null,
      save,
      status: h('p', { id: 'erasure-policy-status', class: 'admin-status', role: 'status' }),
      error: h('p', { id: 'erasure-policy-error', class: 'error', role: 'alert', hidden: true }),
    };
    const form = h('form', { id: 'erasure-policy-form', class: 'policy-form', novalidate: true },
      h('fieldset', { id: 'erasure-policy', class: 'checks', dataset: { test: 'erasure-policy' } },
        h('legend', { text: 'When someone is erased' }),
        h('p', { class: 'field-hint', text: owner
          ? 'Erasing a person removes their profile, sessions and read markers for good. Choose what happens to their messages:'
          : 'Erasing a person removes their profile, sessions and read markers for good. What happens to their messages (owners choose):' }),
        radios),
      this.refs.status, this.refs.error, save);
    this.refs.form = form;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.savePolicy();
    });
    this.loadPolicy();
    return h('section', { id: 'data-rights', class: 'admin-card', 'aria-labelledby': 'data-rights-heading' },
      h('h3', { id: 'data-rights-heading', text: 'Data rights' }),
      form,
      owner ? h('div', { class: 'org-export' },
        h('h4', { id: 'org-export-heading', text: 'Export the org' }),
        h('p', { class: 'field-hint', text: 'Everyone’s profile, the public channels and their messages, as one JSON file (private channels and direct messages are not part of it). It is prepared in the background and kept for 7 days.' }),
        this.exportButton,
        this.exportJob.element) : null);
  }

  async loadPolicy() {
    const refs = this.refs;
    const run = ++this.run;
    let answer;
    try {
      answer = await api.erasurePolicy();
    } catch (error) {
      if (run !== this.run || refs !== this.refs) return;
      setMessage(refs.error, `Could not load the erasure policy: ${error.message}`);
      return;
    }
    if (run !== this.run || refs !== this.refs) return;
    this.showPolicy(answer?.messages);
  }

  showPolicy(policy) {
    if (typeof policy === 'string') this.policy = policy;
    if (!this.refs) return;
    for (const input of this.refs.form.querySelectorAll('input[name="erasure-policy"]')) input.checked = input.value === this.policy;
  }

  async savePolicy() {
    const refs = this.refs;
    if (!refs?.save || refs.save.getAttribute('aria-disabled') === 'true') return;
    const chosen = refs.form.querySelector('input[name="erasure-policy"]:checked')?.value;
    if (!chosen) {
      setMessage(refs.error, 'Choose what an erasure does to messages.');
      return;
    }
    refs.save.setAttribute('aria-disabled', 'true');
    setMessage(refs.error, '');
    refs.status.textContent = 'Saving…';
    try {
      const answer = await api.setErasurePolicy(chosen);
      this.showPolicy(answer?.messages ?? chosen);
      refs.status.textContent = this.policy === 'delete'
        ? 'Saved: an erasure deletes the person’s messages.'
        : 'Saved: an erasure keeps the person’s messages, anonymised.';
      this.onChanged();
    } catch (error) {
      refs.status.textContent = '';
      setMessage(refs.error, `Could not save the erasure policy: ${error.message}`);
      this.showPolicy(this.policy);
    } finally {
      refs.save.removeAttribute('aria-disabled');
    }
  }
}
