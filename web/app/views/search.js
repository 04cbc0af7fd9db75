// views/search.js — the search box and results panel (GET /v1/search). Hits are plain text;
// each is a link that opens its channel at that message.

import * as api from '../api.js';
import { h, setMessage } from '../dom.js';
import { formatDateTime, isoTime } from '../format.js';

export class SearchPanel {
  constructor({ store, people, onOpenHit }) {
    Object.assign(this, { store, people, onOpenHit });
    this.query = '';
    this.cursor = null;
    this.generation = 0;
    this.hits = [];
    this.shown = new Map(); // "channel:seq" → { channel, author }: the hit's rendered labels

    this.input = h('input', {
      id: 'search', type: 'search', name: 'q', placeholder: 'Search messages', autocomplete: 'off', maxlength: 256,
    });
    this.form = h('form', { id: 'search-form', class: 'search-form', role: 'search', novalidate: true },
      h('label', { for: 'search', class: 'visually-hidden', text: 'Search messages' }),
      this.input,
      h('button', { type: 'submit', text: 'Search' }));
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit(this.input.value);
    });

    this.error = h('p', { id: 'search-error', class: 'error', role: 'alert', hidden: true });
    this.status = h('p', { class: 'search-status', role: 'status' });
    this.list = h('ol', { id: 'search-results', class: 'search-results' });
    this.more = h('button', { type: 'button', class: 'search-more', hidden: true, text: 'More results' });
    this.more.addEventListener('click', () => this.loadMore());
    this.closeButton = h('button', { type: 'button', class: 'search-close', text: 'Close search' });
    this.closeButton.addEventListener('click', () => this.close());
    this.panel = h('section', { id: 'search-panel', class: 'search-panel', hidden: true, 'aria-labelledby': 'search-heading' },
      h('div', { class: 'search-panel-header' },
        h('h2', { id: 'search-heading', text: 'Search results' }),
        this.closeButton),
      this.error, this.status, this.list, this.more);
    this.list.addEventListener('click', (event) => this.click(event));
    store.on('people', () => { if (!this.panel.hidden) this.renderHits(); });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  async submit(value) {
    const q = value.trim();
    this.panel.hidden = false;
    this.hits = [];
    this.shown.clear();
    this.list.replaceChildren();
    this.more.hidden = true;
    if (!q) {
      setMessage(this.error, 'Type something to search for.');
      this.status.textContent = '';
      return;
    }
    this.query = q;
    this.cursor = null;
    await this.fetchPage();
  }

  loadMore() {
    if (this.cursor !== null) this.fetchPage();
  }

  async fetchPage() {
    const generation = ++this.generation;
    setMessage(this.error, '');
    this.status.textContent = 'Searching…';
    let page;
    try {
      page = await api.search(this.query, this.cursor ?? undefined);
    } catch (error) {
      if (generation !== this.generation) return;
      this.status.textContent = '';
      setMessage(this.error, error.message || 'Search failed.');
      return;
    }
    if (generation !== this.generation) return;
    this.hits.push(...(page.hits || []));
    this.cursor = page.next_cursor ?? null;
    this.people.ensure(this.hits.map((hit) => hit.sender));
    this.renderHits();
  }

  // Updated in place: names arriving later (people events) or a next page must not rebuild the
  // links, or a keyboard user on one would lose focus.
  renderHits() {
    for (const hit of this.hits) {
      const key = `${hit.channel}:${hit.seq}`;
      let shown = this.shown.get(key);
      if (!shown) {
        shown = this.hitLink(hit);
        this.shown.set(key, shown);
        this.list.append(h('li', null, shown.link));
      }
      const ch = this.store.channel(hit.channel);
      setText(shown.channel, ch ? this.store.channelLabel(ch) : `channel ${hit.channel}`);
      setText(shown.author, this.store.displayName(hit.sender));
    }
    const n = this.hits.length;
    this.status.textContent = n === 0 ? 'No messages match.' : `${n}${this.cursor !== null ? '+' : ''} ${n === 1 ? 'message' : 'messages'} found.`;
    this.more.hidden = this.cursor === null;
  }

  /** A hit's link; its channel and author labels are filled in by renderHits. */
  hitLink(hit) {
    const channel = h('span', { class: 'search-hit-channel' });
    const author = h('span', { class: 'search-hit-author' });
    const link = h('a', {
      class: 'search-hit', href: `#/c/${Number(hit.channel)}?seq=${Number(hit.seq)}`,
      dataset: { channel: hit.channel, seq: hit.seq },
    },
    h('span', { class: 'search-hit-meta' },
      channel,
      author,
      h('time', { class: 'search-hit-time', datetime: isoTime(hit.ts), text: formatDateTime(hit.ts) })),
    h('span', { class: 'search-hit-body', text: hit.body }));
    return { link, channel, author };
  }

  click(event) {
    const link = event.target.closest('a.search-hit');
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    this.onOpenHit(Number(link.dataset.channel), Number(link.dataset.seq));
  }

  /** Hides the panel; focus returns to the search box unless the caller moves it elsewhere. */
  close({ focusInput = true } = {}) {
    if (this.panel.hidden) return;
    this.generation += 1;
    this.panel.hidden = true;
    if (focusInput) this.input.focus();
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
