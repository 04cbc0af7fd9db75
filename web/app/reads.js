// reads.js — read markers (docs/protocol.md, read): while the open channel is visible, the
// window focused and the list scrolled to the newest message, send `read` with the channel's
// newest seq — debounced, and only when higher than what was last sent. read_ack and `read`
// frames from my other devices move the marker (and clear the unread badge).

const DEBOUNCE_MS = 500;
const RETRY_MS = 2_000;

export class ReadMarkers {
  /** `canSee()` → the channel the person is looking at, or null. */
  constructor({ store, gateway, canSee }) {
    Object.assign(this, { store, gateway, canSee });
    this.timer = 0;
    this.sent = new Map(); // channel → highest seq sent
    this.refs = new Map(); // ref → { channel, seq }
    this.unanswered = [];
    this.retryTimers = new Set(); // reads answered `unavailable`, waiting to go again
  }

  stop() {
    clearTimeout(this.timer);
    for (const handle of this.retryTimers) clearTimeout(handle);
    this.retryTimers.clear();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), DEBOUNCE_MS);
  }

  check() {
    const ch = this.canSee();
    if (!ch) return;
    const seq = this.store.newestSeq(ch);
    if (!seq || seq <= Math.max(ch.lastRead, this.sent.get(ch.id) ?? 0)) return;
    this.send(ch.id, seq);
  }

  send(channel, seq) {
    const ref = this.gateway.nextRef('r');
    if (!this.gateway.send({ op: 'read', ref, channel, seq })) return;
    this.refs.set(ref, { channel, seq });
    this.sent.set(channel, Math.max(seq, this.sent.get(channel) ?? 0));
    this.store.markRead(channel, seq); // the badge clears now; read_ack confirms
  }

  onAck(frame) {
    this.refs.delete(frame.ref);
    if (Number.isSafeInteger(frame.seq)) this.store.markRead(frame.channel, frame.seq);
  }

  /** A `read` frame: only my own (other device) moves my marker; DM "seen" is not shown. */
  onRead(frame) {
    if (this.store.isMe(frame.user) && Number.isSafeInteger(frame.seq)) this.store.markRead(frame.channel, frame.seq);
  }

  /** An `error` answering one of our reads: true if it was one. */
  onError(frame) {
    const read = this.refs.get(frame.ref);
    if (!read) return false;
    this.refs.delete(frame.ref);
    // Postgres unreachable: the same read is idempotent, so send it again shortly.
    if (frame.code === 'unavailable') {
      const handle = setTimeout(() => {
        this.retryTimers.delete(handle);
        this.send(read.channel, read.seq);
      }, RETRY_MS);
      this.retryTimers.add(handle);
    }
    return true;
  }

  /** The connection dropped: unanswered reads are sent again once reconnected. */
  onDown() {
    // Appended: reads left over from an earlier drop (not resent yet) are still owed.
    this.unanswered.push(...this.refs.values());
    this.refs.clear();
  }

  onReady() {
    const again = this.unanswered ?? [];
    this.unanswered = [];
    for (const { channel, seq } of again) this.send(channel, seq);
    this.schedule();
  }
}
