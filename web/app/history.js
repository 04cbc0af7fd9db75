// history.js — channel history over REST (docs/api.md, history page): the newest page when a
// channel opens, older pages on scroll, the pages a search hit needs, the gaps announced by
// `history_required` (docs/protocol.md, Resume), and the check for a send whose fate is unknown.
// Everything lands in the store, which merges by seq.

import * as api from './api.js';
import { isTransient } from './http.js';

const PAGE = 50;
const GAP_PAGE = 200;
const GAP_MAX_PAGES = 25; // beyond 5,000 missed messages, reload the channel instead
const GAP_MAX_ATTEMPTS = 6;
const SENT_CHECK_PAGES = 5;
const JUMP_CONTEXT = 25; // a search hit is shown with up to this much context after it

export class History {
  constructor(store, { onChannelReset }) {
    this.store = store;
    this.onChannelReset = onChannelReset;
    this.inFlight = new Map();
    this.retryTimers = new Set(); // gap fills waiting to try again
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
    for (const handle of this.retryTimers) clearTimeout(handle);
    this.retryTimers.clear();
  }

  // One request per channel and purpose at a time; concurrent callers share it.
  once(key, run) {
    if (!this.inFlight.has(key)) this.inFlight.set(key, run().finally(() => this.inFlight.delete(key)));
    return this.inFlight.get(key);
  }

  isLoading(ch, purpose) {
    return this.inFlight.has(`${purpose}:${ch.id}`);
  }

  /** Fetches the newest page unless the channel's window is already live. */
  ensureLoaded(ch) {
    if (ch.loaded) return Promise.resolve();
    return this.once(`newest:${ch.id}`, async () => {
      const page = await api.history(ch.id, { limit: PAGE });
      this.applyNewest(ch, page);
    });
  }

  applyNewest(ch, page) {
    const msgs = page.messages || [];
    // Messages held from live frames that are older than this page are not contiguous with
    // it (more than a page arrived since); scrolling back fetches them again in order.
    if (page.has_more && msgs.length) this.store.dropBelow(ch, msgs[0].seq);
    ch.loaded = true;
    ch.oldest = msgs.length ? msgs[0].seq : null;
    ch.hasMoreBefore = Boolean(page.has_more) && msgs.length > 0;
    this.store.addMessages(ch.id, msgs);
    this.store.touch(ch.id);
  }

  /** Scrolling back: the page before the window's oldest message. */
  loadOlder(ch) {
    const view = ch.view;
    const more = view ? view.moreBefore : ch.loaded && ch.hasMoreBefore && ch.oldest !== null;
    if (!more) return Promise.resolve();
    return this.once(`older:${ch.id}`, async () => {
      const before = view ? view.lo : ch.oldest;
      const page = await api.history(ch.id, { before, limit: PAGE });
      const msgs = page.messages || [];
      const hasMore = Boolean(page.has_more) && msgs.length > 0;
      this.store.addMessages(ch.id, msgs);
      // The window may have changed meanwhile (a reset, a jump): then only merge.
      if (view && ch.view === view && view.lo === before) {
        view.lo = msgs.length ? msgs[0].seq : view.lo;
        view.moreBefore = hasMore;
      } else if (!view && !ch.view && ch.loaded && ch.oldest === before) {
        ch.oldest = msgs.length ? msgs[0].seq : ch.oldest;
        ch.hasMoreBefore = hasMore;
      }
      this.store.touch(ch.id);
    });
  }

  /** In an older stretch (ch.view), scrolling down: the page after it. */
  loadNewer(ch) {
    const view = ch.view;
    if (!view || !view.moreAfter) return Promise.resolve();
    return this.once(`newer:${ch.id}`, async () => {
      const page = await api.history(ch.id, { after: view.hi, limit: PAGE });
      this.applyNewer(ch, view, page);
    });
  }

  applyNewer(ch, view, page) {
    const msgs = page.messages || [];
    this.store.addMessages(ch.id, msgs);
    if (ch.view !== view) return;
    view.hi = msgs.length ? msgs.at(-1).seq : view.hi;
    view.moreAfter = Boolean(page.has_more) && msgs.length > 0;
    const reachesLive = ch.loaded && ch.oldest !== null && view.hi >= ch.oldest;
    if (!view.moreAfter || reachesLive) this.attach(ch, view);
    this.store.touch(ch.id);
  }

  // The stretch met the live window (or the channel's end): from view.lo on, all is held.
  attach(ch, view) {
    const joined = ch.loaded && ch.oldest !== null ? Math.min(ch.oldest, view.lo) : view.lo;
    if (!ch.loaded || joined < (ch.oldest ?? Infinity)) ch.hasMoreBefore = view.moreBefore;
    ch.oldest = joined;
    ch.loaded = true;
    ch.view = null;
  }

  /** Back to the live window (sidebar click, "Jump to newest", sending). */
  leaveStretch(ch) {
    if (!ch.view) return;
    ch.view = null;
    this.store.touch(ch.id);
  }

  /**
   * Makes message `seq` part of what the channel shows: within the live window nothing to
   * fetch; else the page ending just after it, then the page after that for context.
   * Resolves true when the message is held.
   */
  async jumpTo(ch, seq) {
    await this.ensureLoaded(ch);
    if (ch.loaded && (!ch.hasMoreBefore || (ch.oldest !== null && seq >= ch.oldest))) {
      this.leaveStretch(ch);
      return ch.messages.has(seq);
    }
    const page = await api.history(ch.id, { before: seq + JUMP_CONTEXT, limit: PAGE });
    const msgs = page.messages || [];
    this.store.addMessages(ch.id, msgs);
    if (!msgs.length) return false;
    const view = { lo: msgs[0].seq, hi: msgs.at(-1).seq, moreBefore: Boolean(page.has_more), moreAfter: true };
    if (ch.loaded && ch.oldest !== null && view.hi >= ch.oldest) this.attach(ch, view);
    else {
      ch.view = view;
      const after = await api.history(ch.id, { after: view.hi, limit: JUMP_CONTEXT });
      this.applyNewer(ch, view, after);
    }
    this.store.touch(ch.id);
    return ch.messages.has(seq);
  }

  /** `history_required {after_seq, through_seq}`: page the range for every loaded channel. */
  fillGap(afterSeq, throughSeq) {
    if (!Number.isSafeInteger(afterSeq) || !Number.isSafeInteger(throughSeq)) return;
    for (const ch of this.store.channels.values()) {
      if (!ch.loaded) continue; // not opened yet: its newest page is fetched fresh when it is
      // Below the window's oldest message nothing is held, so nothing can be missing there.
      const from = ch.hasMoreBefore && ch.oldest !== null ? Math.max(afterSeq, ch.oldest - 1) : afterSeq;
      this.fillChannelGap(ch.id, from, throughSeq, 0);
    }
  }

  async fillChannelGap(channelId, after, throughSeq, attempt) {
    if (this.stopped) return;
    const before = throughSeq + 1;
    let cursor = after;
    try {
      for (let pages = 0; before > cursor + 1; pages += 1) {
        const ch = this.store.channel(channelId);
        if (!ch || !ch.loaded) return;
        if (pages >= GAP_MAX_PAGES) return this.reset(ch, throughSeq);
        const page = await api.history(channelId, { after: cursor, before, limit: GAP_PAGE });
        const msgs = page.messages || [];
        this.store.addMessages(channelId, msgs);
        if (!page.has_more || !msgs.length) return;
        cursor = msgs.at(-1).seq;
      }
    } catch (error) {
      // 403/404: no longer a member; the channel list follows.
      if (this.stopped || error?.status === 403 || error?.status === 404) return;
      const ch = this.store.channel(channelId);
      // Anything but a passing failure (or one that keeps failing): the gap cannot be filled in
      // place, and returning would leave it open for good; reload the channel instead.
      if (!isTransient(error) || attempt + 1 >= GAP_MAX_ATTEMPTS) return ch && this.reset(ch, throughSeq);
      const handle = setTimeout(() => {
        this.retryTimers.delete(handle);
        this.fillChannelGap(channelId, cursor, throughSeq, attempt + 1);
      }, 1000 * 2 ** attempt);
      this.retryTimers.add(handle);
    }
  }

  // Gives up on filling a gap in place: forget the window up to the gap's end (messages after
  // it came live and stay) and let the channel load its newest page again.
  reset(ch, throughSeq) {
    for (const seq of [...ch.messages.keys()]) if (seq <= throughSeq) ch.messages.delete(seq);
    ch.sorted = null;
    ch.loaded = false;
    ch.oldest = null;
    ch.hasMoreBefore = true;
    ch.view = null;
    this.store.touch(ch.id);
    this.onChannelReset(ch);
  }

  /**
   * Did a send whose answer never came get stored after all? Pages the channel after what it
   * held at the first attempt and merges the copy if found (which settles the pending send).
   */
  async findSent(entry) {
    let after = entry.floorSeq ?? 0;
    for (let pages = 0; pages < SENT_CHECK_PAGES; pages += 1) {
      const page = await api.history(entry.channel, { after, limit: GAP_PAGE });
      const msgs = page.messages || [];
      const hit = msgs.find((m) => this.store.isMe(m.sender) && m.client_msg_id === entry.cmid);
      if (hit) {
        this.store.addMessages(entry.channel, [hit]);
        return true;
      }
      if (!page.has_more || !msgs.length) return false;
      after = msgs.at(-1).seq;
    }
    return false;
  }
}
