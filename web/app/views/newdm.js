// views/newdm.js — "New message": a people picker in a modal dialog that opens the DM or group DM
// with the chosen people (POST /v1/conversations: 201 when created, 200 when it existed — both
// open it). Up to 8 others. Owners, admins and members pick from the org's directory (already
// loaded by people.js; typing also asks GET /v1/users?q= for people who joined since); a guest
// may only talk to people they share a channel with, so a guest picks among the members of
// their channels. A 404 (someone deactivated, or not reachable for a guest) is said in words.

import * as api from '../api.js';
import { h, presenceDot, setMessage, srOnly } from '../dom.js';
import { ApiError } from '../http.js';
import { Dialog, cancelButton } from './dialog.js';

const MAX_OTHERS = 8;
const SHOWN = 50; // candidates listed at once; typing narrows the list
const SEARCH_DELAY_MS = 250;
const GUEST_PAGES = 5; // member pages (of 200) read per channel to find a guest's contacts
const GUEST_LOOKUPS = 200; // at most this many unknown people are looked up (GET /v1/users/{id})

export class NewDmForm {
  /**
   * `onOpened(conversation)`: the 200/201 answer; the app opens it once it is listed.
   * `onProfile(user, opener)`: a candidate's "Profile" button was pressed.
   */
  constructor({ store, people, onOpened, onProfile }) {
    Object.assign(this, { store, people, onOpened, onProfile });
    this.chosen = new Map(); // user id → chip element, in the order chosen
    this.rows = new Map(); // user id → { li, checkbox, name, handle }
    this.contacts = null; // a guest's reachable people (ids), once gathered
    this.serverSearch = true; // false once GET /v1/users?q= answered 403
    this.searchTimer = 0;
    this.generation = 0;
    this.busy = false;

    this.search = h('input', {
      id: 'new-dm-search', type: 'search', autocomplete: 'off', spellcheck: 'false', maxlength: 100,
      placeholder: 'Name or handle', 'aria-controls': 'new-dm-candidates', 'aria-describedby': 'new-dm-hint',
    });
    this.hint = h('p', { id: 'new-dm-hint', class: 'field-hint', text: `Choose up to ${MAX_OTHERS} people. Enter picks the first match.` });
    this.chips = h('ul', { id: 'new-dm-chosen', class: 'dm-chips', 'aria-label': 'Chosen people', hidden: true });
    this.status = h('p', { id: 'new-dm-status', class: 'dm-status', role: 'status' });
    this.list = h('ul', { id: 'new-dm-candidates', class: 'dm-candidates', 'aria-label': 'People' });
    this.error = h('p', { id: 'new-dm-error', class: 'error', role: 'alert', hidden: true });
    this.submitButton = h('button', { id: 'new-dm-submit', type: 'submit', class: 'primary', text: 'Open' });
    this.dialog = new Dialog({ id: 'new-dm-dialog', labelledBy: 'new-dm-heading', className: 'dialog-wide' });
    this.form = h('form', { id: 'new-dm-form', class: 'dialog-form', novalidate: true },
      h('h2', { id: 'new-dm-heading', text: 'New message' }),
      this.chips,
      h('div', { class: 'field' }, h('label', { for: 'new-dm-search', text: 'Find people' }), this.search, this.hint),
      this.status,
      this.list,
      this.error,
      h('div', { class: 'dialog-actions' }, cancelButton(this.dialog), this.submitButton));
    this.dialog.body.append(this.form);
    this.dialog.onClose = () => this.reset();

    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.search.addEventListener('input', () => this.searchChanged());
    this.search.addEventListener('keydown', (event) => this.searchKey(event));
    this.list.addEventListener('change', (event) => {
      const box = event.target.closest('input.dm-candidate-check');
      if (box) this.toggle(Number(box.closest('li.dm-candidate').dataset.user), box.checked);
    });
    this.list.addEventListener('click', (event) => {
      const button = event.target.closest('button.dm-candidate-profile');
      if (button) this.onProfile(Number(button.closest('li.dm-candidate').dataset.user), button);
    });
    this.chips.addEventListener('click', (event) => {
      const button = event.target.closest('button.dm-chip-remove');
      if (!button) return;
      this.toggle(Number(button.closest('li.dm-chip').dataset.user), false);
      this.search.focus();
    });
    store.on('people', () => { if (this.dialog.isOpen) this.renderAll(); });
  }

  get element() {
    return this.dialog.el;
  }

  get isGuest() {
    return this.store.me?.role === 'guest';
  }

  open(opener) {
    this.reset();
    if (!this.dialog.open(opener, this.search)) return;
    this.renderAll();
    if (this.isGuest) this.gatherContacts();
    else this.people.loadDirectory().then(() => this.renderAll());
  }

  reset() {
    clearTimeout(this.searchTimer);
    this.generation += 1;
    this.search.value = '';
    this.chosen.clear();
    this.chips.replaceChildren();
    this.chips.hidden = true;
    setMessage(this.error, '');
  }

  // ---- who can be chosen ----

  /** A guest's contacts: the members of their channels (DM members are known already). */
  async gatherContacts() {
    const generation = this.generation;
    const ids = new Set();
    const named = [];
    for (const ch of this.store.listedChannels()) {
      if (this.store.isDirect(ch)) for (const id of ch.members ?? []) ids.add(id);
      else named.push(ch.id);
    }
    this.contacts = ids;
    this.status.textContent = 'Finding the people of your channels…';
    for (const channelId of named) {
      let after = null;
      for (let page = 0; page < GUEST_PAGES; page += 1) {
        let answer;
        try {
          answer = await api.channelMembers(channelId, { after, limit: 200 });
        } catch {
          break; // a channel left meanwhile (404), or trouble: the others still count
        }
        if (generation !== this.generation) return;
        for (const id of answer?.members ?? []) if (Number.isSafeInteger(id)) ids.add(id);
        after = answer?.next_after ?? null;
        if (after === null) break;
      }
    }
    if (generation !== this.generation) return;
    // A guest looks people up one by one: name the first few hundred, not a crowd's worth.
    const unknown = [...ids].filter((id) => !this.store.users.has(id)).slice(0, GUEST_LOOKUPS);
    this.people.ensure(unknown);
    this.renderAll();
  }

  /** Everyone who may be chosen, known by name, by display name. */
  candidates() {
    const known = [];
    const pool = this.isGuest
      ? [...(this.contacts ?? [])].map((id) => this.store.users.get(id))
      : [...this.store.users.values()];
    for (const user of pool) {
      if (!user || !Number.isSafeInteger(user.id) || this.store.isMe(user.id) || user.deactivated) continue;
      if (typeof user.display_name !== 'string') continue;
      known.push(user);
    }
    return known.sort((a, b) => a.display_name.localeCompare(b.display_name) || a.id - b.id);
  }

  searchChanged() {
    this.renderCandidates();
    clearTimeout(this.searchTimer);
    const q = this.search.value.trim();
    if (!q || this.isGuest || !this.serverSearch) return;
    // People who joined after the directory was loaded are found by the server.
    this.searchTimer = setTimeout(() => this.askServer(q), SEARCH_DELAY_MS);
  }

  async askServer(q) {
    const generation = this.generation;
    try {
      const page = await api.findUsers(q);
      if (generation !== this.generation) return;
      let added = false;
      for (const user of page?.users ?? []) {
        if (!this.store.users.get(user?.id)) added = true;
        this.store.setUser(user);
      }
      if (added) this.renderCandidates();
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) this.serverSearch = false;
    }
  }

  searchKey(event) {
    if (event.key !== 'Enter' || event.isComposing) return;
    event.preventDefault();
    const q = this.search.value.trim();
    if (!q) {
      this.submit();
      return;
    }
    const first = this.matches(q).find((user) => !this.chosen.has(user.id));
    if (!first) return;
    this.toggle(first.id, true);
    this.search.value = '';
    this.renderCandidates();
  }

  matches(q) {
    const needle = q.toLowerCase();
    return this.candidates().filter((user) => !needle
      || user.display_name.toLowerCase().includes(needle)
      || (typeof user.handle === 'string' && user.handle.toLowerCase().includes(needle)));
  }

  // ---- rendering ----

  renderAll() {
    this.renderCandidates();
    this.renderChips();
  }

  renderCandidates() {
    const q = this.search.value.trim();
    const all = this.matches(q);
    const shown = all.slice(0, SHOWN);
    const full = this.chosen.size >= MAX_OTHERS;
    const focused = this.list.contains(document.activeElement) ? document.activeElement : null;
    const items = shown.map((user) => {
      const row = this.row(user);
      row.checkbox.checked = this.chosen.has(user.id);
      row.checkbox.disabled = full && !row.checkbox.checked;
      return row.li;
    });
    this.list.replaceChildren(...items);
    if (focused?.isConnected) focused.focus({ preventScroll: true });
    this.status.textContent = this.statusText(q, all.length, shown.length, full);
  }

  statusText(q, total, shown, full) {
    if (full) return `${MAX_OTHERS} people chosen: that is the most one conversation can have.`;
    if (this.isGuest && this.contacts === null) return '';
    if (total === 0) {
      if (q) return `No one matches “${q}”.`;
      return this.isGuest ? 'You share no channel with anyone yet.' : 'No one else is here yet.';
    }
    if (shown < total) return `Showing ${shown} of ${total} people: type to narrow the list.`;
    return total === 1 ? '1 person.' : `${total} people.`;
  }

  /** One candidate's row, kept per user so re-filtering reuses it. */
  row(user) {
    let row = this.rows.get(user.id);
    if (!row) {
      const boxId = `new-dm-pick-${user.id}`;
      const checkbox = h('input', { id: boxId, type: 'checkbox', class: 'dm-candidate-check' });
      const name = h('span', { class: 'dm-candidate-name' });
      const handle = h('span', { class: 'dm-candidate-handle' });
      const profileName = srOnly('');
      const li = h('li', { class: 'dm-candidate', dataset: { user: user.id } },
        h('label', { for: boxId, class: 'dm-candidate-label' },
          checkbox,
          h('span', { class: 'dm-candidate-text' }, name, handle, presenceDot(user.id, this.store.statusOf(user.id)))),
        // Beside the label, not in it: a button inside a label would also toggle the checkbox.
        h('button', { type: 'button', class: 'dm-candidate-profile', dataset: { test: 'person' } }, 'Profile', profileName));
      row = { li, checkbox, name, handle, profileName };
      this.rows.set(user.id, row);
    }
    setText(row.name, user.display_name);
    setText(row.handle, typeof user.handle === 'string' ? `@${user.handle}` : '');
    setText(row.profileName, ` of ${user.display_name}`);
    return row;
  }

  renderChips() {
    for (const [id, chip] of this.chosen) {
      setText(chip.querySelector('.dm-chip-name'), this.store.displayName(id));
      setText(chip.querySelector('.dm-chip-remove .visually-hidden'), `Remove ${this.store.displayName(id)}`);
    }
  }

  toggle(userId, on) {
    if (!Number.isSafeInteger(userId)) return;
    if (on && !this.chosen.has(userId)) {
      if (this.chosen.size >= MAX_OTHERS) {
        setMessage(this.error, `A conversation can have at most ${MAX_OTHERS} other people.`);
        this.renderCandidates();
        return;
      }
      const name = this.store.displayName(userId);
      const chip = h('li', { class: 'dm-chip', dataset: { user: userId } },
        h('span', { class: 'dm-chip-name', text: name }),
        h('button', { type: 'button', class: 'dm-chip-remove', title: 'Remove' },
          h('span', { 'aria-hidden': 'true', text: '×' }), srOnly(`Remove ${name}`)));
      this.chosen.set(userId, chip);
      this.chips.append(chip);
    } else if (!on && this.chosen.has(userId)) {
      this.chosen.get(userId).remove();
      this.chosen.delete(userId);
    }
    this.chips.hidden = this.chosen.size === 0;
    setMessage(this.error, '');
    this.renderCandidates();
  }

  // ---- opening ----

  async submit() {
    if (this.busy) return;
    if (this.chosen.size === 0) {
      setMessage(this.error, 'Choose at least one person.');
      this.search.focus();
      return;
    }
    this.busy = true;
    this.submitButton.setAttribute('aria-disabled', 'true');
    this.submitButton.textContent = 'Opening…';
    try {
      const conversation = await api.openConversation([...this.chosen.keys()]);
      this.dialog.close({ restoreFocus: false });
      this.onOpened(conversation);
    } catch (error) {
      setMessage(this.error, describe(error));
    } finally {
      this.busy = false;
      this.submitButton.removeAttribute('aria-disabled');
      this.submitButton.textContent = 'Open';
    }
  }
}

function describe(error) {
  if (error.status === 404) {
    return 'Could not open the conversation: someone chosen is deactivated, or not someone you may write to.';
  }
  return `Could not open the conversation: ${error.message || `the server answered ${error.status}`}`;
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}
