// views/messages.js — the message list of the open channel (ol#messages, role=log). Rendering
// is keyed: every message, day separator and marker is one <li> reused across renders, so a
// new message adds one node and prepending older pages keeps the reader's place.

import { h, presenceDot } from '../dom.js';
import { dayKey, dayLabel, formatDateTime, formatTime, isoTime, linkify } from '../format.js';

const GROUP_WINDOW_MS = 5 * 60_000;
const NEAR_EDGE_PX = 300; // start loading this far from the top (or bottom of a stretch)
const AT_BOTTOM_PX = 40;
const HIGHLIGHT_MS = 2_500;

let firstMessageMarked = false;

export class MessageList {
  constructor(listEl, { store, history, onRetry, onDiscard, onProfile, onNearTop, onNearBottom, onScroll, onFocusLost }) {
    Object.assign(this, { listEl, store, history, onRetry, onDiscard, onProfile, onNearTop, onNearBottom, onScroll, onFocusLost });
    this.channel = null;
    this.nodes = new Map(); // key → { node, sig }
    this.scrollQueued = false;
    listEl.addEventListener('scroll', () => this.queueScrollCheck(), { passive: true });
    listEl.addEventListener('click', (event) => this.click(event));
  }

  /** Switches to another channel: a fresh list scrolled to the newest message. */
  show(ch) {
    this.channel = ch;
    this.nodes.clear();
    this.listEl.replaceChildren();
    if (ch) this.render({ toBottom: true });
  }

  isAtBottom() {
    const el = this.listEl;
    return el.scrollHeight - el.scrollTop - el.clientHeight <= AT_BOTTOM_PX;
  }

  /** Whether the list is scrolled to (near) its top, where older pages are loaded. */
  isNearTop() {
    return this.listEl.scrollTop < NEAR_EDGE_PX;
  }

  /** Whether the list has no scrollbar yet (more history may be needed to fill it). */
  isUnderfilled() {
    return this.listEl.scrollHeight <= this.listEl.clientHeight + AT_BOTTOM_PX;
  }

  scrollToBottom() {
    this.listEl.scrollTop = this.listEl.scrollHeight;
  }

  /** Where the list is scrolled to, for restoreScroll() once it is back in the document. */
  scrollState() {
    return { bottom: this.isAtBottom(), top: this.listEl.scrollTop };
  }

  restoreScroll({ bottom, top }) {
    if (bottom) this.scrollToBottom();
    else this.listEl.scrollTop = top;
  }

  /**
   * Re-renders the open channel. Stays at the bottom if it was there (new messages scroll
   * into view only for someone reading the newest ones); otherwise keeps the first visible
   * message where it was, which also keeps the place when older pages are prepended.
   */
  render({ toBottom = false } = {}) {
    const ch = this.channel;
    if (!ch) return;
    const stick = toBottom || this.isAtBottom();
    const anchor = stick ? null : this.captureAnchor();
    this.reconcile(this.items(ch));
    if (stick) this.scrollToBottom();
    else if (anchor) this.restoreAnchor(anchor);
    if (!firstMessageMarked && (ch.loaded || ch.view)) {
      firstMessageMarked = true;
      performance.mark('threadspace:first-message');
    }
  }

  /** Scrolls message `seq` into view and highlights it briefly. */
  reveal(seq) {
    const entry = this.nodes.get(`s:${seq}`);
    if (!entry) return false;
    entry.node.scrollIntoView({ block: 'center' });
    entry.node.classList.add('highlight');
    setTimeout(() => entry.node.classList.remove('highlight'), HIGHLIGHT_MS);
    return true;
  }

  // ---- what to show ----

  items(ch) {
    const store = this.store;
    const view = ch.view;
    const items = [];
    const moreBefore = view ? view.moreBefore : !ch.loaded || ch.hasMoreBefore;
    if (!ch.loaded && !view) items.push({ key: 'loading', sig: 'first', build: () => notice('Loading messages…') });
    else if (!moreBefore) items.push({ key: 'start', sig: store.channelLabel(ch), build: () => this.startMarker(ch) });
    else if (this.history.isLoading(ch, 'older')) {
      items.push({ key: 'loading', sig: 'older', build: () => notice('Loading older messages…') });
    }
    const messages = [...store.visibleMessages(ch)];
    if (!view || !view.moreAfter) messages.push(...store.sortedPending(ch));
    this.addMessageItems(items, messages);
    return items;
  }

  addMessageItems(items, messages) {
    const usedKeys = new Set();
    const now = Date.now();
    let previous = null;
    let previousDay = null;
    for (const msg of messages) {
      const day = dayKey(msg.ts);
      if (day !== previousDay) {
        let key = `d:${day}`;
        // Pending sends sort after acked ones and may belong to an earlier day.
        if (usedKeys.has(key)) key = `${key}:${items.length}`;
        usedKeys.add(key);
        const label = dayLabel(msg.ts, now);
        items.push({ key, sig: label, build: () => daySeparator(label) });
        previousDay = day;
        previous = null;
      }
      const continued = previous !== null && previous.sender === msg.sender
        && msg.ts - previous.ts >= 0 && msg.ts - previous.ts < GROUP_WINDOW_MS;
      items.push(this.messageItem(msg, continued));
      previous = msg;
    }
  }

  messageItem(msg, continued) {
    const pending = msg.state !== 'acked';
    const key = pending ? `p:${msg.cmid}` : `s:${msg.seq}`;
    const author = this.store.displayName(msg.sender ?? this.store.me.id);
    const sig = [msg.state, continued, author, msg.error ?? '', msg.provisional ? msg.ts : ''].join('|');
    return { key, sig, build: () => this.messageNode(msg, continued, author) };
  }

  // ---- building nodes ----

  messageNode(msg, continued, author) {
    const pending = msg.state !== 'acked';
    const sender = pending ? this.store.me.id : msg.sender;
    const li = h('li', {
      class: continued ? 'message continued' : 'message',
      role: 'none',
      dataset: {
        seq: pending ? '' : msg.seq,
        clientMsgId: pending ? msg.cmid : msg.client_msg_id,
        sender,
        state: msg.state,
      },
    });
    const time = h('time', {
      class: 'message-time', datetime: isoTime(msg.ts), title: formatDateTime(msg.ts), text: formatTime(msg.ts),
    });
    if (continued) li.append(time);
    else {
      li.append(h('div', { class: 'message-header' },
        presenceDot(sender, this.store.statusOf(sender)),
        // The author's name opens their profile.
        h('button', { type: 'button', class: 'message-author person-link', dataset: { action: 'profile', test: 'person' }, text: author }),
        time));
    }
    li.append(h('div', { class: 'message-body' }, linkify(msg.body)));
    if (msg.state === 'pending') li.append(h('p', { class: 'message-status', text: 'Sending…' }));
    if (msg.state === 'failed') li.append(this.failureLine(msg));
    return li;
  }

  failureLine(msg) {
    return h('div', { class: 'message-status failed' },
      h('span', { class: 'message-error', text: msg.error || 'Not sent.' }),
      h('button', { type: 'button', class: 'message-retry', dataset: { action: 'retry' }, text: 'Retry' }),
      h('button', { type: 'button', class: 'message-discard', dataset: { action: 'discard' }, text: 'Discard' }));
  }

  startMarker(ch) {
    const label = this.store.channelLabel(ch);
    const text = this.store.isDirect(ch)
      ? `This is the beginning of your conversation with ${label}`
      : `This is the beginning of ${label}`;
    return h('li', { id: 'history-start', class: 'history-start', role: 'none' }, h('p', { text }));
  }

  // ---- keyed reconciliation ----

  reconcile(items) {
    const focused = this.listEl.contains(document.activeElement) && document.activeElement !== this.listEl
      ? document.activeElement
      : null;
    const wanted = new Set(items.map((item) => item.key));
    for (const [key, entry] of this.nodes) {
      if (!wanted.has(key)) {
        entry.node.remove();
        this.nodes.delete(key);
      }
    }
    let cursor = this.listEl.firstChild;
    for (const item of items) {
      let entry = this.nodes.get(item.key);
      if (entry && entry.sig !== item.sig) {
        const fresh = item.build();
        entry.node.replaceWith(fresh);
        if (cursor === entry.node) cursor = fresh;
        entry = { node: fresh, sig: item.sig };
        this.nodes.set(item.key, entry);
      } else if (!entry) {
        entry = { node: item.build(), sig: item.sig };
        this.nodes.set(item.key, entry);
      }
      if (entry.node === cursor) cursor = cursor.nextSibling;
      else this.listEl.insertBefore(entry.node, cursor);
    }
    if (focused && !focused.isConnected) this.restoreFocus(focused);
  }

  // The focused element went with its node (Retry or Discard re-renders the message): focus
  // the same button in the message's new node, or else the composer, rather than the page.
  restoreFocus(lost) {
    const cmid = lost.closest('li.message')?.dataset.clientMsgId;
    const li = cmid ? this.listEl.querySelector(`li.message[data-client-msg-id="${CSS.escape(cmid)}"]`) : null;
    const same = li && lost.dataset.action ? li.querySelector(`button[data-action="${lost.dataset.action}"]`) : null;
    if (same) same.focus({ preventScroll: true });
    else this.onFocusLost();
  }

  captureAnchor() {
    const top = this.listEl.scrollTop;
    for (const node of this.listEl.children) {
      // Not the "Loading older messages…" line: it is gone once the page it announces arrives.
      if (node.classList.contains('history-loading')) continue;
      if (node.offsetTop + node.offsetHeight > top) return { node, offset: node.offsetTop - top };
    }
    return null;
  }

  restoreAnchor({ node, offset }) {
    if (node.isConnected) this.listEl.scrollTop = node.offsetTop - offset;
  }

  // ---- events ----

  queueScrollCheck() {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      const el = this.listEl;
      if (el.scrollTop < NEAR_EDGE_PX) this.onNearTop();
      if (el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_EDGE_PX) this.onNearBottom();
      this.onScroll();
    });
  }

  click(event) {
    const button = event.target.closest('button[data-action]');
    const li = button?.closest('li.message');
    if (!li) return;
    const action = button.dataset.action;
    if (action === 'profile') this.onProfile(Number(li.dataset.sender), button);
    else if (action === 'retry') this.onRetry(li.dataset.clientMsgId);
    else if (action === 'discard') this.onDiscard(li.dataset.clientMsgId);
  }
}

function notice(text) {
  return h('li', { class: 'history-loading', role: 'none' }, h('p', { text }));
}

function daySeparator(label) {
  return h('li', { class: 'day-separator', role: 'none' }, h('h3', { class: 'day-label', text: label }));
}
