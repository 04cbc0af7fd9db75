// views/browse.js — #/browse: the org's public channels (GET /v1/browse/channels), by name, with
// a search box, member counts, and Join (PUT /v1/channels/{id}/members/{me}, then the channel
// opens) or Open for those already joined. Owners, admins and members; guests see only the
// channels they were added to, so they get a sentence instead (also if the server says 403).
// "Show archived channels" lists the archived ones instead (archived=true): each has Open, which
// shows its history read-only (readable by its members; others are told so by the server).

import * as api from '../api.js';
import { h, setMessage, srOnly } from '../dom.js';
import { ApiError } from '../http.js';

const PAGE = 50;
const SEARCH_DELAY_MS = 250;

export class BrowseView {
  /**
   * `onOpen(channelId)`: open a channel (once listed); `onOpenArchived({ id, name })`: show an
   * archived one read-only; `onCreate(opener)`: the new-channel form.
   */
  constructor({ store, onOpen, onOpenArchived, onCreate }) {
    Object.assign(this, { store, onOpen, onOpenArchived, onCreate });
    this.generation = 0;
    this.next = null; // the next page's `after`
    this.loading = false;
    this.searchTimer = 0;
    this.rows = new Map(); // channel id → the row's parts

    this.heading = h('h2', { id: 'browse-heading', tabindex: '-1', text: 'Browse channels' });
    this.createButton = h('button', { type: 'button', class: 'browse-create', text: 'Create a channel' });
    this.createButton.addEventListener('click', () => this.onCreate(this.createButton));
    this.input = h('input', {
      id: 'browse-search', type: 'search', autocomplete: 'off', spellcheck: 'false', maxlength: 80,
      placeholder: 'Search channels by name', 'aria-controls': 'browse-results',
    });
    this.searchForm = h('form', { class: 'browse-search-form', role: 'search', novalidate: true },
      h('label', { for: 'browse-search', text: 'Search channels' }), this.input);
    this.searchForm.addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(this.searchTimer);
      this.load();
    });
    this.input.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.load(), SEARCH_DELAY_MS);
    });
    this.archived = h('input', { id: 'browse-archived', type: 'checkbox', dataset: { test: 'browse-archived' } });
    this.archived.addEventListener('change', () => this.load());
    this.archivedToggle = h('div', { class: 'check browse-archived' },
      this.archived, h('label', { for: 'browse-archived', text: 'Show archived channels' }));
    this.status = h('p', { id: 'browse-status', class: 'browse-status', role: 'status' });
    this.error = h('p', { id: 'browse-error', class: 'error', role: 'alert', hidden: true });
    // Focusable so focus has somewhere to go when "Load more" disappears under it.
    this.list = h('ul', { id: 'browse-results', class: 'browse-list', 'aria-labelledby': 'browse-heading', tabindex: '-1' });
    this.list.addEventListener('click', (event) => this.click(event));
    this.more = h('button', { id: 'browse-more', type: 'button', class: 'browse-more', hidden: true, text: 'Load more' });
    // Not disabled while loading: a disabled button would drop the focus.
    this.more.addEventListener('click', () => this.loading || this.load(this.next));
    this.guestNotice = h('p', { class: 'notice', role: 'status', hidden: true,
      text: 'Guests see only the channels they were added to: ask a member to add you to others.' });
    this.body = h('div', { class: 'browse-body' }, this.searchForm, this.archivedToggle, this.status, this.error, this.list, this.more);
    this.element = h('div', { class: 'browse' },
      h('div', { class: 'browse-header' }, this.heading, this.createButton),
      this.guestNotice, this.body);
  }

  get isGuest() {
    return this.store.me?.role === 'guest';
  }

  /** The route opened the view: a fresh first page (the search box keeps its text). */
  show(container) {
    if (!container.contains(this.element)) container.replaceChildren(this.element);
    this.showGuest(this.isGuest);
    if (!this.isGuest) this.load();
  }

  showGuest(guest) {
    this.guestNotice.hidden = !guest;
    this.body.hidden = guest;
    this.createButton.hidden = guest;
  }

  /** Loads the first page (replacing the list), or with `after` the next one (appended). */
  async load(after = null) {
    clearTimeout(this.searchTimer);
    const generation = after === null ? ++this.generation : this.generation;
    const q = this.input.value.trim() || null;
    const archived = this.archived.checked;
    this.loading = true;
    this.list.setAttribute('aria-busy', 'true');
    if (after === null) this.status.textContent = 'Loading channels…';
    let page = null;
    let failure = null;
    try {
      page = await api.browseChannels({ q, after, limit: PAGE, archived: archived ? true : null });
    } catch (error) {
      failure = error;
    }
    if (generation !== this.generation) return;
    this.loading = false;
    this.list.removeAttribute('aria-busy');
    if (failure instanceof ApiError && failure.status === 403) {
      this.showGuest(true);
      return;
    }
    const hadFocus = document.activeElement === this.more;
    if (failure) {
      if (after === null) this.clear();
      setMessage(this.error, `Could not load the channels: ${failure.message}`);
    } else {
      setMessage(this.error, '');
      if (after === null) this.clear();
      for (const entry of page?.channels ?? []) {
        if (!Number.isSafeInteger(entry?.id) || this.rows.has(entry.id)) continue;
        this.list.append(this.row(entry, archived));
      }
      this.next = typeof page?.next_after === 'string' && page.next_after ? page.next_after : null;
    }
    this.more.hidden = this.next === null;
    this.status.textContent = this.statusText(q, failure, archived);
    if (hadFocus && this.more.hidden) this.list.focus();
  }

  clear() {
    this.rows.clear();
    this.list.replaceChildren();
    this.next = null;
  }

  statusText(q, failure, archived) {
    if (failure && !this.rows.size) return '';
    const n = this.rows.size;
    const kind = archived ? 'archived ' : '';
    if (n === 0) {
      if (q) return `No ${archived ? 'archived' : 'public'} channel matches “${q}”.`;
      return archived ? 'There are no archived public channels.' : 'There are no public channels yet.';
    }
    const more = this.next !== null ? '+' : '';
    return `${n}${more} ${kind}${n === 1 && !more ? 'channel' : 'channels'}${q ? ` matching “${q}”` : ''}.`;
  }

  row(entry, archived) {
    const name = typeof entry.name === 'string' ? entry.name : `channel ${entry.id}`;
    const members = h('span', { class: 'browse-members' });
    const li = h('li', { class: 'browse-channel', dataset: { channel: entry.id, archived: archived ? 'true' : null } },
      h('span', { class: 'browse-info' },
        h('span', { class: 'browse-name', text: `#${name}` }),
        archived ? h('span', { class: 'browse-archived-tag', text: 'archived' }) : null,
        members));
    const row = { li, name, members, archived, count: Number(entry.members) || 0, action: null };
    this.rows.set(entry.id, row);
    this.setCount(row, row.count);
    // An archived channel cannot be joined (409 archived): it is only opened, read-only.
    this.setJoined(row, archived || entry.joined === true);
    return li;
  }

  setCount(row, count) {
    row.count = count;
    row.members.textContent = count === 1 ? '1 member' : `${count} members`;
  }

  setJoined(row, joined) {
    const button = joined
      ? h('button', { type: 'button', class: 'browse-open' }, 'Open', srOnly(` #${row.name}`))
      : h('button', { type: 'button', class: 'browse-join' }, 'Join', srOnly(` #${row.name}`));
    const hadFocus = row.action !== null && document.activeElement === row.action;
    if (row.action) row.action.replaceWith(button);
    else row.li.append(button);
    row.action = button;
    row.joined = joined;
    if (hadFocus) button.focus();
  }

  click(event) {
    const button = event.target.closest('button.browse-join, button.browse-open');
    if (!button) return;
    const id = Number(button.closest('li.browse-channel').dataset.channel);
    const row = this.rows.get(id);
    if (!row) return;
    if (row.archived) this.onOpenArchived({ id, name: row.name });
    else if (button.classList.contains('browse-open')) this.onOpen(id);
    else this.join(id, row, button);
  }

  async join(id, row, button) {
    if (row.busy) return;
    row.busy = true;
    button.setAttribute('aria-disabled', 'true');
    setMessage(this.error, '');
    try {
      const answer = await api.addMember(id, this.store.me.id);
      // The `member` frame may have come first and counted me already (membershipChanged).
      if (answer?.changed && !row.joined) this.setCount(row, row.count + 1);
      if (!row.joined) this.setJoined(row, true);
      this.onOpen(id);
    } catch (error) {
      button.removeAttribute('aria-disabled');
      setMessage(this.error, joinFailure(row.name, error));
      if (error instanceof ApiError && error.status === 404) {
        // Gone (deleted, or no longer public): it is not in the list any more.
        row.li.remove();
        this.rows.delete(id);
        this.list.focus();
      }
    } finally {
      row.busy = false;
    }
  }

  /** My membership of a listed channel changed elsewhere (a `member` frame). */
  membershipChanged(channelId, joined) {
    const row = this.rows.get(channelId);
    if (row && !row.archived && row.joined !== joined) {
      this.setCount(row, Math.max(0, row.count + (joined ? 1 : -1)));
      this.setJoined(row, joined);
    }
  }
}

function joinFailure(name, error) {
  if (error.status === 404) return `#${name} no longer exists.`;
  if (error.code === 'archived') return `#${name} is archived: it can be read but not joined.`;
  return `Could not join #${name}: ${error.message}`;
}
