// outbox.js — outgoing messages (docs/protocol.md, send). Each message gets a fresh
// client_msg_id and keeps it on every automatic retry (after `unavailable`/`rate_limited`,
// after a reconnect), so the gateway's deduplication makes retries safe. JetStream dedups for
// 2 minutes; retrying stops 90 s after the first attempt and the message shows as failed.

import { newClientMsgId } from './format.js';

export const RETRY_WINDOW_MS = 90_000;
const DEADLINE_CHECK_MS = 1_000;
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 8_000;

const FAILURE_TEXT = {
  not_member: 'Not sent: you are not a member of this channel.',
  id_reused: 'Not sent: its message id was already used. Retry sends it as a new message.',
  invalid_field: 'Not sent: the server refused the message.',
  timeout: 'Not sent: no answer from the server in time.',
  check_failed: 'Could not check whether this message was sent. Try again.',
};

/**
 * An entry: { cmid, channel, body, ts, state: 'pending'|'failed', error, firstSentAt,
 * floorSeq, attempts, ref, maybeStored, renewId, retryTimer, checking }. It lives in its channel's
 * `pending` map until its ack or its message arrives.
 */
export class Outbox {
  constructor({ store, gateway, history, onBounced }) {
    Object.assign(this, { store, gateway, history, onBounced });
    this.entries = new Map(); // cmid → entry
    this.refs = new Map(); // ref → entry, for the attempt on the current connection
    this.timer = setInterval(() => this.enforceDeadlines(), DEADLINE_CHECK_MS);
  }

  stop() {
    clearInterval(this.timer);
    for (const entry of this.entries.values()) clearTimeout(entry.retryTimer);
  }

  send(channel, body) {
    const now = Date.now();
    const entry = {
      cmid: newClientMsgId(), channel, body, ts: now, state: 'pending', error: null,
      firstSentAt: null, floorSeq: null, attempts: 0, ref: null, maybeStored: false,
      renewId: false, retryTimer: 0, checking: false,
    };
    this.entries.set(entry.cmid, entry);
    this.store.addPending(entry);
    this.transmit(entry);
    return entry;
  }

  // Writes one attempt if the connection is ready; otherwise the next `ready` flushes it.
  transmit(entry) {
    entry.retryTimer = 0;
    if (!this.isLive(entry) || entry.state !== 'pending' || entry.checking || !this.gateway.ready) return;
    if (entry.firstSentAt !== null && Date.now() - entry.firstSentAt >= RETRY_WINDOW_MS) {
      this.fail(entry, FAILURE_TEXT.timeout);
      return;
    }
    const ref = this.gateway.nextRef('s');
    const frame = { op: 'send', ref, channel: entry.channel, client_msg_id: entry.cmid, body: entry.body };
    if (!this.gateway.send(frame)) return;
    if (entry.firstSentAt === null) {
      entry.firstSentAt = Date.now();
      // What the channel held then: a later check for a stored copy starts here.
      const ch = this.store.channel(entry.channel);
      entry.floorSeq = ch ? this.store.newestSeq(ch) : 0;
    }
    entry.attempts += 1;
    // Written: whatever answer comes (or never does), this attempt may have been stored.
    entry.maybeStored = true;
    // Only the newest attempt's ref is ours: a late answer to an earlier one must not settle
    // or fail the entry as it is now (perhaps renewed under a new id).
    if (entry.ref) this.refs.delete(entry.ref);
    entry.ref = ref;
    this.refs.set(ref, entry);
  }

  // Still waiting for an answer (not settled by an ack or by its message arriving).
  isLive(entry) {
    if (this.store.hasPending(entry)) return true;
    this.forget(entry);
    return false;
  }

  forget(entry) {
    clearTimeout(entry.retryTimer);
    if (entry.ref) this.refs.delete(entry.ref);
    if (this.entries.get(entry.cmid) === entry) this.entries.delete(entry.cmid);
  }

  /** `ack`: stored under `seq` (also when we had given up on it: an ack is the truth). */
  onAck(frame) {
    const entry = this.refs.get(frame.ref) ?? this.entries.get(frame.client_msg_id);
    if (!entry || !Number.isSafeInteger(frame.seq)) return;
    this.forget(entry);
    if (this.store.hasPending(entry)) this.store.ackPending(entry, frame.seq);
  }

  /** `error` with a ref: true when the ref was one of our sends. */
  onError(frame) {
    const entry = this.refs.get(frame.ref);
    if (!entry) return false;
    this.refs.delete(frame.ref);
    entry.ref = null;
    if (!this.isLive(entry)) return true;
    switch (frame.code) {
      case 'unavailable': // JetStream did not confirm in time: it may still have stored it
      case 'rate_limited':
        this.retryLater(entry);
        break;
      case 'body_too_large':
        this.forget(entry);
        this.store.removePending(entry);
        this.onBounced(entry);
        break;
      case 'id_reused':
        entry.renewId = true;
        this.fail(entry, FAILURE_TEXT.id_reused);
        break;
      default:
        this.fail(entry, FAILURE_TEXT[frame.code] ?? `Not sent: ${frame.message || frame.code}`);
    }
    return true;
  }

  retryLater(entry) {
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.max(0, entry.attempts - 1))
      * (0.5 + Math.random() / 2);
    if (Date.now() + delay - entry.firstSentAt >= RETRY_WINDOW_MS) {
      this.fail(entry, FAILURE_TEXT.timeout);
      return;
    }
    entry.retryTimer = setTimeout(() => this.transmit(entry), delay);
  }

  /** The connection dropped: attempts without an answer may or may not have been stored. */
  onDown() {
    for (const entry of this.refs.values()) entry.ref = null;
    this.refs.clear();
  }

  /**
   * Connected (after `resumed`, so a replayed copy has already settled its send): resend
   * everything still pending, in the order it was written, under the same ids — at most
   * `send_burst` at once, then `sends_per_second` (welcome.limits), so a long queue is not
   * refused as rate_limited.
   */
  onReady() {
    const waiting = [...this.entries.values()]
      .filter((entry) => entry.state === 'pending' && !entry.ref && !entry.checking);
    const burst = Math.max(1, Number(this.store.limits?.send_burst) || 20);
    const perSecond = Math.max(1, Number(this.store.limits?.sends_per_second) || 10);
    waiting.forEach((entry, i) => {
      clearTimeout(entry.retryTimer);
      if (i < burst) this.transmit(entry);
      else entry.retryTimer = setTimeout(() => this.transmit(entry), ((i - burst + 1) * 1000) / perSecond);
    });
  }

  enforceDeadlines() {
    const now = Date.now();
    for (const entry of [...this.entries.values()]) {
      // A Retry checking the history for a stored copy decides itself once the check is done.
      if (!this.isLive(entry) || entry.state !== 'pending' || entry.checking) continue;
      // Never written (offline all along): also give up after 90 s so it does not hang.
      const since = entry.firstSentAt ?? entry.ts;
      if (now - since >= RETRY_WINDOW_MS) this.fail(entry, FAILURE_TEXT.timeout);
    }
  }

  fail(entry, text) {
    clearTimeout(entry.retryTimer);
    entry.retryTimer = 0;
    entry.state = 'failed';
    entry.error = text;
    this.store.touch(entry.channel);
  }

  /**
   * The Retry button. Within 90 s of the first attempt the same id is reused (the server
   * deduplicates). Later, a retry under the old id might land after the 2-minute dedup window
   * and store a second copy without anyone noticing; so first look in the history for a copy
   * of an attempt whose fate is unknown, and if there is none, send under a new id.
   */
  async retry(cmid) {
    const entry = this.entries.get(cmid);
    if (!entry || entry.state !== 'failed' || !this.isLive(entry)) return;
    const expired = entry.firstSentAt !== null && Date.now() - entry.firstSentAt >= RETRY_WINDOW_MS;
    // A late error for the failed attempt must not touch the retried entry (a late ack still
    // finds it by its client_msg_id).
    if (entry.ref) this.refs.delete(entry.ref);
    entry.ref = null;
    this.setPending(entry);
    if (expired && entry.maybeStored) {
      let found = false;
      // Pending again but long past 90 s: without this mark the deadline check (and a
      // reconnect's resend) would fail it again while the check is still under way.
      entry.checking = true;
      try {
        found = await this.history.findSent(entry);
      } catch {
        this.fail(entry, FAILURE_TEXT.check_failed);
        return;
      } finally {
        entry.checking = false;
      }
      if (found || !this.isLive(entry)) return;
    }
    if (expired || entry.renewId || entry.firstSentAt === null) this.renew(entry, expired || entry.renewId);
    entry.attempts = 0;
    this.transmit(entry);
  }

  /** The Discard button of a failed message. */
  discard(cmid) {
    const entry = this.entries.get(cmid);
    if (!entry || entry.state !== 'failed') return;
    this.forget(entry);
    this.store.removePending(entry);
  }

  setPending(entry) {
    entry.state = 'pending';
    entry.error = null;
    this.store.touch(entry.channel);
  }

  // Restarts the 90 s clock; with `newId`, under a fresh client_msg_id.
  renew(entry, newId) {
    if (newId) {
      this.entries.delete(entry.cmid);
      this.store.rekeyPending(entry, newClientMsgId());
      this.entries.set(entry.cmid, entry);
      entry.firstSentAt = null;
      entry.maybeStored = false;
      entry.renewId = false;
    }
    entry.ts = Date.now();
  }
}
