// views/profileform.js — editing my own profile (PATCH /v1/me/profile): display name, title,
// time zone and avatar URL. Only the fields that changed are sent; an emptied title, time zone or
// avatar URL is sent as "" (cleared); the display name cannot be emptied. The server judges the
// values (its 400 names the field, and its message is shown beside the form).

import * as api from '../api.js';
import { field, h, setMessage } from '../dom.js';

// Form field → profile key; the display name comes first and cannot be cleared.
const FIELDS = [
  ['display_name', 'profile-display-name', 'Display name', { type: 'text', autocomplete: 'name' }, null],
  ['title', 'profile-title', 'Title', { type: 'text', autocomplete: 'organization-title', maxlength: 100 },
    'What you do, e.g. Site reliability (up to 100 characters). Leave empty to clear it.'],
  ['time_zone', 'profile-time-zone', 'Time zone', { type: 'text', autocomplete: 'off', spellcheck: 'false', list: 'profile-time-zones' },
    `An IANA name such as Europe/Berlin or UTC${browserZone() ? `; this browser is in ${browserZone()}` : ''}. Leave empty to clear it.`],
  ['avatar_url', 'profile-avatar-url', 'Avatar URL', { type: 'url', autocomplete: 'off', spellcheck: 'false', placeholder: 'https://…' },
    'A link (http or https) to a picture of you. Pictures from other sites are not loaded here: people see it as a link. Leave empty to clear it.'],
];

export class ProfileForm {
  /** `onSaved(user)`: the server's answer, me as others now see me; `onCancel()`: editing stopped. */
  constructor({ store, onSaved, onCancel }) {
    Object.assign(this, { store, onSaved, onCancel });
    this.user = null;
    this.busy = false;
    this.inputs = new Map(); // profile key → input
    const fields = FIELDS.map(([key, id, label, props, hint]) => {
      const f = field(id, label, props, hint);
      this.inputs.set(key, f.input);
      return f.el;
    });
    this.zones = h('datalist', { id: 'profile-time-zones' });
    this.error = h('p', { id: 'profile-form-error', class: 'error', role: 'alert', hidden: true, dataset: { test: 'profile-error' } });
    this.save = h('button', { id: 'profile-save', type: 'submit', class: 'primary', dataset: { test: 'profile-save' }, text: 'Save profile' });
    const cancel = h('button', { id: 'profile-cancel', type: 'button', dataset: { test: 'profile-cancel' }, text: 'Cancel editing' });
    cancel.addEventListener('click', () => this.onCancel());
    this.element = h('form', {
      id: 'profile-form', class: 'profile-form', novalidate: true, hidden: true,
      'aria-labelledby': 'profile-form-heading', dataset: { test: 'profile-form' },
    },
    h('h3', { id: 'profile-form-heading', text: 'Edit your profile' }),
    fields, this.zones, this.error,
    h('div', { class: 'dialog-actions' }, cancel, this.save));
    this.element.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  get isOpen() {
    return !this.element.hidden;
  }

  /** Shows the form filled with `user` (me) and focuses the display name. */
  show(user) {
    this.user = user;
    for (const [key, input] of this.inputs) {
      input.value = typeof user?.[key] === 'string' ? user[key] : '';
      input.removeAttribute('aria-invalid');
    }
    this.fillZones();
    setMessage(this.error, '');
    this.element.hidden = false;
    this.inputs.get('display_name').focus();
  }

  hide() {
    this.element.hidden = true;
    setMessage(this.error, '');
  }

  // The zones this browser knows, as suggestions (the field accepts any name).
  fillZones() {
    if (this.zones.childElementCount || typeof Intl.supportedValuesOf !== 'function') return;
    try {
      this.zones.append(...Intl.supportedValuesOf('timeZone').map((zone) => h('option', { value: zone })));
    } catch {
      // No list: the field is plain text.
    }
  }

  /** Only what changed; "" for a cleared title, time zone or avatar URL. */
  changes() {
    const changes = {};
    for (const [key, input] of this.inputs) {
      const value = input.value.trim();
      const before = typeof this.user?.[key] === 'string' ? this.user[key] : '';
      if (value !== before) changes[key] = value;
    }
    return changes;
  }

  async submit() {
    if (this.busy || !this.user) return;
    const changes = this.changes();
    if (changes.display_name === '') {
      this.fail('Your display name cannot be empty.', 'display_name');
      return;
    }
    if (!Object.keys(changes).length) {
      setMessage(this.error, 'Nothing changed: there is nothing to save.');
      return;
    }
    this.busy = true;
    this.save.setAttribute('aria-disabled', 'true');
    this.save.textContent = 'Saving…';
    try {
      const user = await api.updateProfile(changes);
      this.store.setUser(user);
      if (this.store.isMe(user?.id)) this.store.setMe(user);
      this.store.emit('people');
      this.hide();
      this.onSaved(user);
    } catch (error) {
      // The message names the field (400 invalid_field): point at it.
      const key = [...this.inputs.keys()].find((name) => error.message?.includes(name)) ?? null;
      this.fail(`Could not save your profile: ${error.message}`, key);
    } finally {
      this.busy = false;
      this.save.removeAttribute('aria-disabled');
      this.save.textContent = 'Save profile';
    }
  }

  fail(text, key) {
    setMessage(this.error, text);
    for (const [name, input] of this.inputs) {
      if (name === key) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
    (this.inputs.get(key) ?? this.inputs.get('display_name')).focus();
  }
}

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || '';
  } catch {
    return '';
  }
}
