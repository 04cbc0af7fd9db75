// channels.js — the channel list. Each `welcome` carries it (without DM members); GET
// /v1/channels carries it with DM members, and is asked again on every `member` frame.
// Whichever answer is newer wins; a REST answer overtaken by a `welcome` only adds members.

import * as api from './api.js';

export class ChannelList {
  constructor(store, people) {
    this.store = store;
    this.people = people;
    this.known = false; // a list has arrived (routes to a channel wait for it)
    this.welcomes = 0;
    this.request = null;
    this.stale = false;
  }

  fromWelcome(channels) {
    this.welcomes += 1;
    this.known = true;
    this.store.replaceChannelList(channels);
    const store = this.store;
    if (store.listedChannels().some((ch) => store.isDirect(ch) && !ch.members)) this.refresh();
  }

  /** `member`: my membership changed (applied at once; the REST list confirms it). */
  onMember(frame) {
    if (this.store.isMe(frame.user)) {
      if (frame.change === 'left') this.store.removeChannel(frame.channel);
      else this.store.ensureChannel(frame.channel);
    }
    this.refresh();
  }

  /**
   * `channel`: one of my channels was renamed or given a topic or purpose (`updated`), archived
   * (read-only: it leaves the list, its history stays readable) or unarchived (listed again,
   * from a fresh list: docs/protocol.md, channel).
   */
  onChannel(frame) {
    const id = frame.channel;
    if (!Number.isSafeInteger(id)) return;
    const info = { name: frame.name, topic: frame.topic, purpose: frame.purpose };
    if (frame.change === 'updated') this.store.applyChannelInfo(id, info);
    else if (frame.change === 'archived') this.store.applyChannelInfo(id, { archived: true });
    else if (frame.change === 'unarchived') {
      this.store.applyChannelInfo(id, { ...info, archived: false });
      this.refresh();
    }
  }

  /** GET /v1/channels, one request at a time; a call meanwhile asks again afterwards. */
  refresh() {
    if (this.request) {
      this.stale = true;
      return;
    }
    const welcomesBefore = this.welcomes;
    this.request = api.listChannels().then((answer) => {
      const list = answer?.channels ?? [];
      if (this.welcomes === welcomesBefore || !this.known) {
        this.known = true;
        this.store.replaceChannelList(list);
      } else {
        this.store.mergeChannelDetails(list);
      }
      this.people.ensure(list.flatMap((entry) => entry.members ?? []));
    }, () => { /* the welcome's list stands; DMs keep a generic label */ }).finally(() => {
      this.request = null;
      if (this.stale) {
        this.stale = false;
        this.refresh();
      }
    });
  }
}
