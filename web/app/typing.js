// typing.js — typing indicators (docs/protocol.md, typing): ours go out at most every 3 s per
// channel while the composer changes; theirs show until `expires_ms` passes without another, or
// until that person's next message in the channel arrives.

import { joinNames } from './format.js';

const SEND_EVERY_MS = 3_000;
const DEFAULT_EXPIRES_MS = 6_000;
const STILL_TYPING_MS = 1_000; // a deferred `typing` goes out only if a key was pressed this recently

export class Typing {
  constructor(store, onChange) {
    this.store = store;
    this.onChange = onChange; // (channelId) => void
    this.typists = new Map(); // channel → Map(user → timeout handle)
    this.lastSent = new Map(); // channel → ms
    this.trailing = new Map(); // channel → timeout handle of a deferred `typing`
    this.lastKey = new Map(); // channel → ms of the last keystroke
  }

  stop() {
    for (const handle of this.trailing.values()) clearTimeout(handle);
    this.trailing.clear();
    for (const users of this.typists.values()) for (const handle of users.values()) clearTimeout(handle);
    this.typists.clear();
  }

  /**
   * A keystroke in `channelId`'s composer: `send()` now if the last `typing` went out 3 s ago or
   * more, else once when those 3 s are up. The gateway forwards at most one per 3 s and drops
   * the rest, so a burst that starts right after the previous one (typing on after sending a
   * message) would otherwise never be announced. The deferred one is dropped if typing stopped
   * meanwhile: announcing it then would show an indicator for someone who is not typing.
   */
  keystroke(channelId, send) {
    const now = Date.now();
    this.lastKey.set(channelId, now);
    const wait = (this.lastSent.get(channelId) ?? 0) + SEND_EVERY_MS - now;
    if (wait <= 0) {
      this.lastSent.set(channelId, now);
      send();
      return;
    }
    if (this.trailing.has(channelId)) return;
    this.trailing.set(channelId, setTimeout(() => {
      this.trailing.delete(channelId);
      if (Date.now() - (this.lastKey.get(channelId) ?? 0) > STILL_TYPING_MS) return;
      this.lastSent.set(channelId, Date.now());
      send();
    }, wait + 50));
  }

  /** A message went out: typing that has not been announced yet is over. */
  sent(channelId) {
    clearTimeout(this.trailing.get(channelId));
    this.trailing.delete(channelId);
  }

  received(frame) {
    const { channel, user } = frame;
    if (!Number.isSafeInteger(channel) || !Number.isSafeInteger(user) || this.store.isMe(user)) return;
    const expires = Number(frame.expires_ms) > 0 ? Number(frame.expires_ms) : DEFAULT_EXPIRES_MS;
    let users = this.typists.get(channel);
    if (!users) {
      users = new Map();
      this.typists.set(channel, users);
    }
    clearTimeout(users.get(user));
    users.set(user, setTimeout(() => this.clear(channel, user), expires));
    this.onChange(channel);
  }

  clear(channel, user) {
    const users = this.typists.get(channel);
    if (!users?.has(user)) return;
    clearTimeout(users.get(user));
    users.delete(user);
    this.onChange(channel);
  }

  /** "Ada is typing…", "Ada and Bob are typing…", "Several people are typing…", or "". */
  text(channelId) {
    const ids = [...(this.typists.get(channelId)?.keys() ?? [])];
    if (ids.length === 0) return '';
    if (ids.length > 3) return 'Several people are typing…';
    const names = ids.map((id) => this.store.displayName(id));
    return `${joinNames(names)} ${ids.length === 1 ? 'is' : 'are'} typing…`;
  }
}
