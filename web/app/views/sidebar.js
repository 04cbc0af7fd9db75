// views/sidebar.js — the channel and DM list in nav#sidebar, with unread badges and, for DMs,
// presence dots. Entries are kept per channel id and updated in place, so a badge changing
// while someone tabs through the list does not steal their focus. Beside the headings: "+" for a
// new channel and for a new message; under the channels, "Browse channels" (#/browse). Guests
// may neither create nor browse channels: those two are hidden for them.

import { h, presenceDot, srOnly } from '../dom.js';

export class Sidebar {
  /** `onNewChannel(opener)`, `onNewDm(opener)`: the "+" buttons were pressed. */
  constructor(navEl, store, { onNewChannel, onNewDm }) {
    this.navEl = navEl;
    this.store = store;
    this.entries = new Map(); // channel id → { li, link, name, badge, badgeText, sig }
    this.activeId = null;
    this.channelList = h('ul', { class: 'channel-list', id: 'channel-list' });
    this.dmList = h('ul', { class: 'channel-list', id: 'dm-list' });
    this.channelsEmpty = h('p', { class: 'sidebar-empty', text: 'No channels yet.' });
    this.dmsEmpty = h('p', { class: 'sidebar-empty', text: 'No direct messages yet.' });
    this.newChannel = addButton('new-channel', 'New channel');
    this.newChannel.addEventListener('click', () => onNewChannel(this.newChannel));
    this.newDm = addButton('new-dm', 'New message');
    this.newDm.addEventListener('click', () => onNewDm(this.newDm));
    this.browseLink = h('a', { id: 'browse-link', class: 'sidebar-action', href: '#/browse', text: 'Browse channels' });
    navEl.append(
      h('div', { class: 'sidebar-section' },
        h('h2', { class: 'sidebar-heading', id: 'channels-heading', text: 'Channels' }), this.newChannel),
      this.channelList, this.channelsEmpty, this.browseLink,
      h('div', { class: 'sidebar-section' },
        h('h2', { class: 'sidebar-heading', id: 'dms-heading', text: 'Direct messages' }), this.newDm),
      this.dmList, this.dmsEmpty,
    );
    this.setRole(store.me?.role);
  }

  /** Shows only what this role may do (guests: no creating, no browsing). */
  setRole(role) {
    const guest = role === 'guest';
    this.newChannel.hidden = guest;
    this.browseLink.hidden = guest;
  }

  /** Marks "Browse channels" as the current page while #/browse shows. */
  setBrowsing(on) {
    if (on) this.browseLink.setAttribute('aria-current', 'page');
    else this.browseLink.removeAttribute('aria-current');
  }

  /** Rebuilds the order and labels (channel list or names changed), reusing entries. */
  render() {
    // The focused entry may be rebuilt (renamed) or moved: keep keyboard focus on its channel.
    const focusedId = this.navEl.contains(document.activeElement)
      ? document.activeElement.closest('a.channel-link')?.dataset.channel ?? null
      : null;
    const channels = this.store.listedChannels();
    const keep = new Set(channels.map((ch) => ch.id));
    for (const [id, entry] of this.entries) {
      if (!keep.has(id)) {
        entry.li.remove();
        this.entries.delete(id);
      }
    }
    const named = [];
    const direct = [];
    for (const ch of channels) (this.store.isDirect(ch) ? direct : named).push(this.entry(ch).li);
    // Reordered in place: entries already in order are not touched (replaceChildren would
    // detach every one, and with it the focus of someone tabbing through the list).
    arrange(this.channelList, named);
    arrange(this.dmList, direct);
    this.channelsEmpty.hidden = named.length > 0;
    this.dmsEmpty.hidden = direct.length > 0;
    for (const ch of channels) this.updateBadge(ch.id);
    this.setActive(this.activeId);
    if (focusedId !== null && !this.navEl.contains(document.activeElement)) {
      const link = this.entries.get(Number(focusedId))?.link;
      if (link) link.focus({ preventScroll: true });
      else this.focusActive(); // its channel is gone: somewhere near, not the page's start
    }
  }

  entry(ch) {
    const label = this.store.channelLabel(ch);
    const dmUser = this.store.isDirect(ch) ? this.store.otherMembers(ch)[0] ?? null : null;
    const sig = `${ch.kind}|${label}|${dmUser}`;
    const existing = this.entries.get(ch.id);
    if (existing && existing.sig === sig) return existing;
    const entry = this.buildEntry(ch, label, dmUser);
    entry.sig = sig;
    if (existing) existing.li.replaceWith(entry.li);
    this.entries.set(ch.id, entry);
    return entry;
  }

  buildEntry(ch, label, dmUser) {
    const badge = h('span', { class: 'unread-badge', hidden: true, 'aria-hidden': 'true' });
    const badgeText = srOnly('');
    const marker = ch.kind === 'private'
      ? h('span', { class: 'channel-lock', title: 'Private channel' }, srOnly('Private channel: '))
      : null;
    const link = h('a', { class: 'channel-link', href: `#/c/${ch.id}`, dataset: { channel: ch.id } },
      dmUser !== null ? presenceDot(dmUser, this.store.statusOf(dmUser)) : null,
      marker,
      h('span', { class: 'channel-name', text: label }),
      badge,
      badgeText);
    return { li: h('li', null, link), link, badge, badgeText };
  }

  updateBadge(channelId) {
    const entry = this.entries.get(channelId);
    const ch = this.store.channel(channelId);
    if (!entry || !ch) return;
    const count = this.store.unreadCount(ch);
    const text = count > 99 ? '99+' : String(count);
    if (entry.badge.textContent !== text) entry.badge.textContent = text;
    entry.badge.hidden = count === 0;
    entry.badgeText.textContent = count ? `, ${count} unread` : '';
  }

  setActive(channelId) {
    this.activeId = channelId;
    for (const [id, entry] of this.entries) {
      if (id === channelId) entry.link.setAttribute('aria-current', 'page');
      else entry.link.removeAttribute('aria-current');
    }
  }

  /** The channel before/after the active one, in sidebar order (Alt+ArrowUp/ArrowDown). */
  neighbour(step) {
    const ids = this.store.listedChannels().map((ch) => ch.id);
    if (!ids.length) return null;
    const index = ids.indexOf(this.activeId);
    if (index === -1) return ids[0];
    return ids[(index + step + ids.length) % ids.length];
  }

  focusActive() {
    (this.entries.get(this.activeId)?.link ?? this.navEl.querySelector('a.channel-link'))?.focus();
  }
}

/** A small "+" button beside a heading; its name for screen readers is `label`. */
function addButton(id, label) {
  return h('button', { id, type: 'button', class: 'sidebar-add', title: label },
    h('span', { class: 'sidebar-add-icon', 'aria-hidden': 'true', text: '+' }), srOnly(label));
}

/** Makes `nodes` the children of `list`, in order, moving only those out of place. */
function arrange(list, nodes) {
  let cursor = list.firstChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}
