// store.js — the signed-in client's state: channels, each channel's messages in a Map keyed by
// seq (so history pages, live frames, replays and gap fills can never show a message twice),
// pending sends keyed by client_msg_id, people and presence. Views listen to its events:
// 'channels', 'messages' (detail: channel id), 'people', 'presence' (detail: user ids), 'me'.

/**
 * A channel's history window. `loaded`: the newest page was fetched, and every message from
 * `oldest` up to the live edge is held (`hasMoreBefore` false: the whole channel is held).
 * `view` is null when showing that window, or { lo, hi, moreBefore, moreAfter } while showing
 * an older stretch reached from a search hit, not yet joined to the live window.
 */
function newChannel(id) {
  return {
    id, kind: null, name: null, members: null, listed: false, lastRead: 0,
    topic: '', purpose: '', archived: false, createdBy: null, infoAt: 0,
    messages: new Map(), sorted: null, pending: new Map(),
    loaded: false, oldest: null, hasMoreBefore: true, view: null,
  };
}

function normalize(raw) {
  if (!raw || !Number.isSafeInteger(raw.seq) || !Number.isSafeInteger(raw.channel)) return null;
  return {
    seq: raw.seq,
    channel: raw.channel,
    sender: Number.isSafeInteger(raw.sender) ? raw.sender : 0,
    client_msg_id: typeof raw.client_msg_id === 'string' ? raw.client_msg_id : '',
    body: typeof raw.body === 'string' ? raw.body : '',
    ts: Number.isFinite(raw.ts) ? raw.ts : Date.now(),
    state: 'acked',
  };
}

const KIND_ORDER = { public: 0, private: 0, dm: 1, group_dm: 1 };

export class Store extends EventTarget {
  constructor() {
    super();
    this.me = null; // { id, org, handle, display_name, role }
    this.org = null; // { id, slug, name, signup_domain }
    this.limits = { max_body_bytes: 16_384 };
    this.channels = new Map();
    this.users = new Map(); // id → user, or null when the API says we may not see them
    this.presence = new Map(); // id → 'online' | 'idle'; absent means offline
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, handler, signal) {
    this.addEventListener(type, (event) => handler(event.detail), { signal });
  }

  // ---- me, org, limits ----

  setMe(user) {
    this.me = { ...this.me, ...user };
    this.users.set(user.id, { ...this.users.get(user.id), ...user });
    this.emit('me');
  }

  isMe(userId) {
    return this.me !== null && userId === this.me.id;
  }

  // ---- channels ----

  channel(id) {
    return this.channels.get(id) ?? null;
  }

  ensureChannel(id) {
    let ch = this.channels.get(id);
    if (!ch) {
      ch = newChannel(id);
      this.channels.set(id, ch);
    }
    return ch;
  }

  /**
   * Replaces the channel list (from `welcome` or GET /v1/channels). Channels that were listed
   * and are not any more are dropped; returns their ids. Read markers only move forward.
   */
  replaceChannelList(list) {
    const seen = new Set();
    for (const entry of list || []) {
      if (!Number.isSafeInteger(entry?.id)) continue;
      seen.add(entry.id);
      const ch = this.ensureChannel(entry.id);
      ch.kind = entry.kind ?? ch.kind;
      ch.name = typeof entry.name === 'string' ? entry.name : ch.name;
      if (Array.isArray(entry.members)) ch.members = entry.members.filter(Number.isSafeInteger);
      ch.lastRead = Math.max(ch.lastRead, Number(entry.last_read) || 0);
      ch.listed = true;
      ch.archived = false; // the list holds no archived channel
    }
    const removed = [];
    for (const [id, ch] of this.channels) {
      if (ch.listed && !seen.has(id)) {
        this.channels.delete(id);
        removed.push(id);
      }
    }
    this.emit('channels');
    return removed;
  }

  /** Updates members and read markers of known channels, leaving the list as it is. */
  mergeChannelDetails(list) {
    for (const entry of list || []) {
      const ch = this.channels.get(entry?.id);
      if (!ch) continue;
      if (Array.isArray(entry.members)) ch.members = entry.members.filter(Number.isSafeInteger);
      ch.lastRead = Math.max(ch.lastRead, Number(entry.last_read) || 0);
    }
    this.emit('channels');
  }

  removeChannel(id) {
    if (this.channels.delete(id)) this.emit('channels');
  }

  /**
   * A known channel's details (GET /v1/channels/{id}, the PATCH and archive answers, `channel`
   * frames): any of `kind`, `name`, `topic`, `purpose`, `archived`, `created_by`. An archived
   * channel leaves the list but stays in the store, its messages readable; only the channel
   * list (after `unarchived`) lists it again. A plain read (`{ read: true }`: a GET that may have
   * left before an `archived` frame came) never un-archives a channel: only the `unarchived`
   * frame, the unarchive answer or the channel list do. Returns the channel, or null when unknown.
   */
  applyChannelInfo(id, info, { read = false } = {}) {
    const ch = this.channels.get(id);
    if (!ch || !info || typeof info !== 'object') return null;
    if (typeof info.kind === 'string') ch.kind = info.kind;
    if (typeof info.name === 'string' && info.name) ch.name = info.name;
    if (typeof info.topic === 'string') ch.topic = info.topic;
    if (typeof info.purpose === 'string') ch.purpose = info.purpose;
    if (Object.hasOwn(info, 'created_by')) ch.createdBy = Number.isSafeInteger(info.created_by) ? info.created_by : null;
    if (info.archived === true) {
      ch.archived = true;
      ch.listed = false;
    } else if (info.archived === false && !read) {
      ch.archived = false;
    }
    this.emit('channels');
    return ch;
  }

  /** Listed channels in sidebar order: named channels by name, then DMs by label. */
  listedChannels() {
    return [...this.channels.values()]
      .filter((ch) => ch.listed)
      .sort((a, b) => (KIND_ORDER[a.kind] ?? 2) - (KIND_ORDER[b.kind] ?? 2)
        || this.channelLabel(a).localeCompare(this.channelLabel(b))
        || a.id - b.id);
  }

  isDirect(ch) {
    return ch.kind === 'dm' || ch.kind === 'group_dm';
  }

  /** The people a DM is with (everyone but me; just me in a DM with myself). */
  otherMembers(ch) {
    if (!ch.members) return [];
    const others = ch.members.filter((id) => !this.isMe(id));
    return others.length ? others : ch.members.slice(0, 1);
  }

  /** "#general", "secret" (private: the sidebar adds a lock), "Ada, Bob" for DMs. */
  channelLabel(ch) {
    if (ch.kind === 'public') return `#${ch.name ?? ch.id}`;
    if (ch.kind === 'private') return ch.name ?? `channel ${ch.id}`;
    if (this.isDirect(ch)) {
      const others = this.otherMembers(ch);
      return others.length ? others.map((id) => this.displayName(id)).join(', ') : 'Direct message';
    }
    return `channel ${ch.id}`;
  }

  // ---- messages ----

  /**
   * Merges messages (from any source) into a channel by seq. A message of mine carrying the
   * client_msg_id of a pending send settles that send: the placeholder is replaced, not doubled.
   */
  addMessages(channelId, list) {
    const ch = this.ensureChannel(channelId);
    let changed = false;
    for (const raw of list) {
      const msg = normalize(raw);
      if (!msg || msg.channel !== channelId) continue;
      if (this.isMe(msg.sender) && msg.client_msg_id && ch.pending.delete(msg.client_msg_id)) changed = true;
      const existing = ch.messages.get(msg.seq);
      // A record made from an `ack` has our local clock; the real message replaces it.
      if (existing && !existing.provisional) continue;
      ch.messages.set(msg.seq, msg);
      ch.sorted = null;
      changed = true;
    }
    if (changed) this.emit('messages', channelId);
    return changed;
  }

  /** Drops held messages below `seq` (they are not contiguous with a fresh newest page). */
  dropBelow(ch, seq) {
    for (const key of ch.messages.keys()) {
      if (key < seq) ch.messages.delete(key);
    }
    ch.sorted = null;
  }

  sortedMessages(ch) {
    if (!ch.sorted) ch.sorted = [...ch.messages.values()].sort((a, b) => a.seq - b.seq);
    return ch.sorted;
  }

  /** The messages the channel's current window shows, in seq order. */
  visibleMessages(ch) {
    const all = this.sortedMessages(ch);
    if (ch.view) return all.filter((m) => m.seq >= ch.view.lo && m.seq <= ch.view.hi);
    if (!ch.loaded) return [];
    if (!ch.hasMoreBefore || ch.oldest === null) return all;
    return all.filter((m) => m.seq >= ch.oldest);
  }

  newestSeq(ch) {
    const all = this.sortedMessages(ch);
    return all.length ? all.at(-1).seq : 0;
  }

  /** Messages of others after my read marker, among those this client holds. */
  unreadCount(ch) {
    let count = 0;
    for (const msg of ch.messages.values()) {
      if (msg.seq > ch.lastRead && !this.isMe(msg.sender)) count += 1;
    }
    return count;
  }

  markRead(channelId, seq) {
    const ch = this.channel(channelId);
    if (!ch || !(seq > ch.lastRead)) return;
    ch.lastRead = seq;
    this.emit('messages', channelId);
  }

  /** Any change to a channel's window: views re-render. */
  touch(channelId) {
    this.emit('messages', channelId);
  }

  // ---- pending sends (entries are owned by outbox.js) ----

  addPending(entry) {
    this.ensureChannel(entry.channel).pending.set(entry.cmid, entry);
    this.touch(entry.channel);
  }

  hasPending(entry) {
    return this.channel(entry.channel)?.pending.get(entry.cmid) === entry;
  }

  removePending(entry) {
    if (this.channel(entry.channel)?.pending.delete(entry.cmid)) this.touch(entry.channel);
  }

  /** A retry under a new id: same entry, new key. */
  rekeyPending(entry, cmid) {
    const ch = this.ensureChannel(entry.channel);
    ch.pending.delete(entry.cmid);
    entry.cmid = cmid;
    ch.pending.set(cmid, entry);
  }

  /** `ack`: the pending send is stored under `seq`; until its `msg` arrives, show this copy. */
  ackPending(entry, seq) {
    const ch = this.ensureChannel(entry.channel);
    ch.pending.delete(entry.cmid);
    if (!ch.messages.has(seq)) {
      ch.messages.set(seq, {
        seq, channel: entry.channel, sender: this.me.id, client_msg_id: entry.cmid,
        body: entry.body, ts: entry.ts, state: 'acked', provisional: true,
      });
      ch.sorted = null;
    }
    this.touch(entry.channel);
  }

  sortedPending(ch) {
    return [...ch.pending.values()].sort((a, b) => a.ts - b.ts);
  }

  // ---- people and presence ----

  setUser(user) {
    if (!Number.isSafeInteger(user?.id)) return;
    this.users.set(user.id, { ...this.users.get(user.id), ...user });
  }

  displayName(userId) {
    const user = this.users.get(userId);
    return user?.display_name || `user ${userId}`;
  }

  statusOf(userId) {
    return this.presence.get(userId) ?? 'offline';
  }

  /** The welcome's snapshot: everyone not in it is offline. Returns every id whose status changed. */
  replacePresence(list) {
    const before = this.presence;
    this.presence = new Map();
    for (const entry of list || []) this.applyPresence(entry);
    const changed = new Set([...before.keys(), ...this.presence.keys()]);
    const ids = [...changed].filter((id) => (before.get(id) ?? 'offline') !== this.statusOf(id));
    this.emit('presence', ids);
  }

  updatePresence(list) {
    const ids = [];
    for (const entry of list || []) if (this.applyPresence(entry)) ids.push(entry.user);
    this.emit('presence', ids);
  }

  applyPresence(entry) {
    if (!Number.isSafeInteger(entry?.user)) return false;
    const status = entry.status === 'online' || entry.status === 'idle' ? entry.status : 'offline';
    const previous = this.statusOf(entry.user);
    if (status === 'offline') this.presence.delete(entry.user);
    else this.presence.set(entry.user, status);
    return previous !== status;
  }
}
