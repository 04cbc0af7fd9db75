// views/shell.js — the signed-in page: header (org, search, connection, me, my profile, admin
// link, sign-out), the sidebar, and main with the channel view (its header: title and topic,
// members, leave and settings buttons, the members panel; the archived notice above the
// composer), the browse view and the admin view; the modal dialogs after them. Landmarks:
// header, nav, main; one h1 (the org), h2 per region.

import { h } from '../dom.js';

const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  connected: 'Connected',
  offline: 'Offline',
};

/** Builds the shell around the parts other views own; returns the elements the app drives. */
export function buildShell({ searchForm, searchPanel, composerForm, channelActions, membersPanel, settingsButton, dialogs = [] }) {
  const refs = {};
  refs.toggle = h('button', {
    id: 'sidebar-toggle', type: 'button', class: 'sidebar-toggle',
    'aria-controls': 'sidebar', 'aria-expanded': 'false', text: 'Channels',
  });
  refs.orgName = h('h1', { id: 'org-name', class: 'org-name', text: 'ThreadSpace' });
  refs.status = h('p', { id: 'connection-status', class: 'connection-status', role: 'status', dataset: { state: 'reconnecting' }, text: CONNECTION_TEXT.connecting });
  refs.me = h('span', { id: 'me', class: 'me-name' });
  refs.profileButton = h('button', { id: 'my-profile', type: 'button', class: 'my-profile', dataset: { test: 'my-profile' }, text: 'Profile' });
  refs.adminLink = h('a', { id: 'admin-link', href: '#/admin', class: 'admin-link', hidden: true, text: 'People' });
  refs.signOut = h('button', { id: 'sign-out', type: 'button', text: 'Sign out' });
  const header = h('header', { class: 'topbar' },
    h('div', { class: 'topbar-start' }, refs.toggle, refs.orgName),
    searchForm,
    h('div', { class: 'topbar-end' },
      refs.status,
      h('p', { class: 'signed-in-as' }, h('span', { class: 'visually-hidden', text: 'Signed in as ' }), refs.me),
      refs.profileButton,
      refs.adminLink,
      refs.signOut));

  refs.sidebar = h('nav', { id: 'sidebar', class: 'sidebar', 'aria-label': 'Channels and direct messages' });

  // tabindex -1: focus moves here after a route change (not a Tab stop).
  refs.title = h('h2', { id: 'channel-title', class: 'channel-title', tabindex: '-1', text: '' });
  refs.topic = h('p', { id: 'channel-topic', class: 'channel-topic', hidden: true, dataset: { test: 'channel-topic' } });
  refs.notice = h('div', { id: 'channel-notice', class: 'channel-notice', role: 'status', hidden: true });
  // An archived channel is shown read-only: this says so, above the disabled composer.
  refs.archived = h('p', {
    id: 'archived-notice', class: 'archived-notice', role: 'status', hidden: true, dataset: { test: 'archived-notice' },
    text: 'This channel is archived: its history can be read, but nothing new can be posted.',
  });
  refs.list = h('ol', {
    id: 'messages', class: 'messages', role: 'log', 'aria-live': 'polite',
    'aria-labelledby': 'channel-title', tabindex: '0',
  });
  refs.jumpLatest = h('button', { id: 'jump-latest', type: 'button', class: 'jump-latest', hidden: true, text: 'Jump to newest messages' });
  refs.typing = h('p', { id: 'typing', class: 'typing', 'aria-live': 'polite' });
  refs.channelView = h('section', { id: 'channel-view', class: 'channel-view', 'aria-labelledby': 'channel-title' },
    h('div', { class: 'channel-header' },
      h('div', { class: 'channel-heading' }, refs.title, refs.topic),
      h('div', { class: 'channel-tools' }, channelActions, settingsButton)),
    membersPanel, refs.notice, refs.list, refs.jumpLatest, refs.typing, refs.archived, composerForm);
  refs.browseView = h('section', { id: 'browse-view', class: 'browse-view', hidden: true, 'aria-labelledby': 'browse-heading' });
  refs.adminView = h('section', { id: 'admin-view', class: 'admin-view', hidden: true });
  refs.main = h('main', { id: 'main', class: 'main' }, refs.channelView, refs.browseView, refs.adminView);
  refs.layout = h('div', { class: 'layout' }, refs.sidebar, refs.main);

  refs.app = h('div', { id: 'app', class: 'app' }, header, searchPanel, refs.layout, ...dialogs);
  return refs;
}

/** Shows the connection state: data-state connected | reconnecting | offline. */
export function showConnection(statusEl, phase, everConnected) {
  let state = 'reconnecting';
  let text = everConnected ? CONNECTION_TEXT.reconnecting : CONNECTION_TEXT.connecting;
  if (phase === 'ready') {
    state = 'connected';
    text = CONNECTION_TEXT.connected;
  } else if (phase === 'offline' || phase === 'stopped') {
    state = 'offline';
    text = CONNECTION_TEXT.offline;
  }
  statusEl.dataset.state = state;
  if (statusEl.textContent !== text) statusEl.textContent = text;
}
