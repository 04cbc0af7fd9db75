// views/members.js — the channel header's members button ("12 members") and "Leave channel"
// button, and the members panel below the header (GET /v1/channels/{id}/members, paged with
// `after`): display names with presence dots. The count comes from one page of 200 ids, asked
// for shortly after a channel opens (and remembered for a minute); a DM's members are known.
// Each name is a button that opens that person's profile (views/profile.js).
// Leaving a public channel happens at once (joining again is one click in #/browse); leaving a
// private one is confirmed first, since only someone inside can add you back.

import * as api from '../api.js';
import { h, presenceDot, setMessage } from '../dom.js';
import { ApiError } from '../http.js';
import { Dialog, cancelButton } from './dialog.js';

const PAGE = 100;
const COUNT_PAGE = 200;
const COUNT_DELAY_MS = 500; // switching through channels quickly asks for none of them
const COUNT_TTL_MS = 60_000;

export class MembersPanel {
  /** `onLeave(channel)`: the Leave button was pressed; `onProfile(user, opener)`: a name was. */
  constructor({ store, people, onLeave, onProfile }) {
    Object.assign(this, { store, people, onLeave, onProfile });
    this.channel = null;
    this.counts = new Map(); // channel id → { text, at }
    this.countTimer = 0;
    this.generation = 0;
    this.next = null;
    this.loading = false;
    this.rows = new Map(); // user id → the name element

    this.countText = h('span', { class: 'channel-members-count', text: 'Members' });
    this.button = h('button', {
      id: 'channel-members', type: 'button', class: 'channel-members',
      'aria-expanded': 'false', 'aria-controls': 'members-panel',
    }, h('span', { class: 'members-icon', 'aria-hidden': 'true' }), this.countText);
    this.button.addEventListener('click', () => (this.isOpen ? this.close() : this.open()));
    this.leaveButton = h('button', { id: 'leave-channel', type: 'button', class: 'leave-channel', hidden: true, text: 'Leave channel' });
    this.leaveButton.addEventListener('click', () => this.leaveClicked());
    this.actions = h('div', { class: 'channel-actions', hidden: true }, this.button, this.leaveButton);

    this.heading = h('h3', { id: 'members-heading', tabindex: '-1', text: 'Members' });
    this.closeButton = h('button', { type: 'button', class: 'members-close', text: 'Close' });
    this.closeButton.addEventListener('click', () => this.close());
    this.status = h('p', { id: 'members-status', class: 'members-status', role: 'status' });
    this.error = h('p', { id: 'members-error', class: 'error', role: 'alert', hidden: true });
    this.list = h('ul', { id: 'members-list', class: 'members-list', 'aria-labelledby': 'members-heading', tabindex: '-1' });
    this.list.addEventListener('click', (event) => {
      const button = event.target.closest('button.member-name');
      if (button) this.onProfile(Number(button.closest('li.member').dataset.user), button);
    });
    this.more = h('button', { id: 'members-more', type: 'button', class: 'members-more', hidden: true, text: 'Load more' });
    // Not disabled while loading: a disabled button would drop the focus.
    this.more.addEventListener('click', () => this.loading || this.load(this.next));
    this.panel = h('section', { id: 'members-panel', class: 'members-panel', hidden: true, 'aria-labelledby': 'members-heading' },
      h('div', { class: 'members-panel-header' }, this.heading, this.closeButton),
      this.error, this.status, this.list, this.more);

    this.confirmText = h('p', { id: 'leave-confirm-text' });
    this.confirmButton = h('button', { id: 'leave-confirm', type: 'submit', class: 'primary danger', text: 'Leave' });
    this.confirm = new Dialog({ id: 'leave-dialog', labelledBy: 'leave-heading' });
    const form = h('form', { id: 'leave-form', class: 'dialog-form', novalidate: true },
      h('h2', { id: 'leave-heading', text: 'Leave this private channel?' }),
      this.confirmText,
      h('div', { class: 'dialog-actions' }, cancelButton(this.confirm), this.confirmButton));
    this.confirm.body.append(form);
    this.confirm.el.setAttribute('aria-describedby', 'leave-confirm-text');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const ch = this.confirming;
      this.confirm.close({ restoreFocus: false });
      if (ch && ch.id === this.channel?.id) this.onLeave(ch);
      else this.leaveButton.focus();
    });
    this.confirming = null;
  }

  /** The modal dialogs this view owns (they go into the page, after main). */
  get dialogs() {
    return [this.confirm.el];
  }

  leaveClicked() {
    const ch = this.channel;
    if (!ch) return;
    if (ch.kind !== 'private') {
      this.onLeave(ch);
      return;
    }
    this.confirming = ch;
    setText(this.confirmText, `You will no longer see ${this.store.channelLabel(ch)}. It is private: only one of its members can add you back.`);
    // Focus on Cancel: Enter on a focused dialog should not be the irreversible choice.
    this.confirm.open(this.leaveButton, this.confirm.body.querySelector('.dialog-cancel'));
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  /** Another channel opened (or none: `ch` null): the panel closes, the count is the new one's. */
  show(ch) {
    if (this.isOpen) this.close({ focusButton: false });
    this.channel = ch;
    clearTimeout(this.countTimer);
    this.actions.hidden = !ch;
    if (!ch) return;
    this.update(ch);
    const cached = this.counts.get(ch.id);
    if (this.store.isDirect(ch) || (cached && Date.now() - cached.at < COUNT_TTL_MS)) return;
    this.countTimer = setTimeout(() => this.fetchCount(ch.id), COUNT_DELAY_MS);
  }

  /** The channel's details changed (kind, DM members): the header's buttons follow. */
  update(ch) {
    if (!ch || ch.id !== this.channel?.id) return;
    this.channel = ch;
    // An archived channel takes no membership change (409 archived): nobody leaves it.
    this.leaveButton.hidden = !(ch.kind === 'public' || ch.kind === 'private') || ch.archived || !ch.listed;
    const label = this.store.channelLabel(ch);
    let text = this.counts.get(ch.id)?.text ?? null;
    if (this.store.isDirect(ch) && ch.members) text = countText(ch.members.length, false);
    setText(this.countText, text ?? 'Members');
    if (this.isOpen) setText(this.heading, `Members of ${label}`);
  }

  /** My membership of a channel changed: its count is stale. */
  invalidate(channelId) {
    this.counts.delete(channelId);
    if (this.channel?.id === channelId && !this.store.isDirect(this.channel)) {
      clearTimeout(this.countTimer);
      this.countTimer = setTimeout(() => this.fetchCount(channelId), COUNT_DELAY_MS);
    }
  }

  async fetchCount(channelId) {
    let page;
    try {
      page = await api.channelMembers(channelId, { limit: COUNT_PAGE });
    } catch {
      return; // the button stays "Members"
    }
    const ids = Array.isArray(page?.members) ? page.members : [];
    this.remember(channelId, countText(ids.length, page?.next_after != null));
  }

  remember(channelId, text) {
    this.counts.set(channelId, { text, at: Date.now() });
    if (this.channel?.id === channelId) this.update(this.channel);
  }

  // ---- the panel ----

  open() {
    const ch = this.channel;
    if (!ch) return;
    this.panel.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    setText(this.heading, `Members of ${this.store.channelLabel(ch)}`);
    this.load(null);
    this.heading.focus();
  }

  close({ focusButton = true } = {}) {
    if (!this.isOpen) return;
    this.generation += 1;
    this.loading = false;
    this.panel.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    if (focusButton) this.button.focus();
  }

  contains(node) {
    return this.panel.contains(node);
  }

  /** The first page (replacing the list), or with `after` the next one (appended). */
  async load(after) {
    const ch = this.channel;
    const generation = after === null ? ++this.generation : this.generation;
    this.loading = true;
    this.list.setAttribute('aria-busy', 'true');
    if (after === null) {
      this.rows.clear();
      this.list.replaceChildren();
      this.next = null;
      this.more.hidden = true;
      this.status.textContent = 'Loading members…';
    }
    setMessage(this.error, '');
    let page = null;
    let failure = null;
    try {
      page = await api.channelMembers(ch.id, { after, limit: PAGE });
    } catch (error) {
      failure = error;
    }
    if (generation !== this.generation || ch !== this.channel) return;
    this.loading = false;
    this.list.removeAttribute('aria-busy');
    const hadFocus = document.activeElement === this.more;
    if (failure) {
      const gone = failure instanceof ApiError && failure.status === 404;
      setMessage(this.error, gone ? 'You can no longer see this channel.' : `Could not load the members: ${failure.message}`);
    } else {
      const ids = (page?.members ?? []).filter((id) => Number.isSafeInteger(id) && !this.rows.has(id));
      this.people.ensure(ids);
      this.list.append(...ids.map((id) => this.row(id)));
      this.next = Number.isSafeInteger(page?.next_after) ? page.next_after : null;
      // Every member is listed: the exact count.
      if (this.next === null) this.remember(ch.id, countText(this.rows.size, false));
    }
    this.more.hidden = this.next === null;
    const n = this.rows.size;
    this.status.textContent = failure && !n ? ''
      : `${n}${this.next !== null ? '+' : ''} ${n === 1 && this.next === null ? 'member' : 'members'}${this.next !== null ? ' so far' : ''}.`;
    if (hadFocus && this.more.hidden) this.list.focus();
  }

  row(userId) {
    // The name opens their profile.
    const name = h('button', { type: 'button', class: 'member-name person-link', dataset: { test: 'person' }, text: this.store.displayName(userId) });
    this.rows.set(userId, name);
    return h('li', { class: 'member', dataset: { user: userId } },
      presenceDot(userId, this.store.statusOf(userId)),
      name,
      this.store.isMe(userId) ? h('span', { class: 'tag', text: ' (you)' }) : null);
  }

  /** Names arrived (people.js): update them in place. */
  peopleChanged() {
    for (const [id, name] of this.rows) setText(name, this.store.displayName(id));
  }
}

function countText(n, more) {
  if (more) return `${n}+ members`;
  return n === 1 ? '1 member' : `${n} members`;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
