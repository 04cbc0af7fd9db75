// chat.js — the signed-in app: wires the gateway connection, the store, history, the outbox and
// the views together, routes #/c/<id>, #/browse and #/admin, and handles every gateway frame
// (docs/protocol.md, Gateway → client). One instance per signed-in session; stop() undoes all.
// An archived channel is shown read-only: its history, the archived notice, no composer.

import { Activity } from './activity.js';
import * as api from './api.js';
import { ChannelList } from './channels.js';
import { h, updatePresenceDots } from './dom.js';
import { History } from './history.js';
import { Outbox } from './outbox.js';
import { People } from './people.js';
import { ReadMarkers } from './reads.js';
import { Gateway } from './socket.js';
import { Store } from './store.js';
import * as tokens from './tokens.js';
import { Typing } from './typing.js';
import { AdminView } from './views/admin.js';
import { BrowseView } from './views/browse.js';
import { ChannelSettings } from './views/channelsettings.js';
import { Composer } from './views/composer.js';
import { MembersPanel } from './views/members.js';
import { MessageList } from './views/messages.js';
import { NewChannelForm } from './views/newchannel.js';
import { NewDmForm } from './views/newdm.js';
import { ProfileDialog } from './views/profile.js';
import { SearchPanel } from './views/search.js';
import { buildShell, showConnection } from './views/shell.js';
import { Sidebar } from './views/sidebar.js';

// A channel just created, joined or opened is shown once the channel list has it; if the list
// does not have it after this long, the route is taken anyway (and says what went wrong).
const OPEN_TIMEOUT_MS = 10_000;
// A channel's details (topic, creator) are read again when it opens, at most this often.
const CHANNEL_INFO_TTL_MS = 60_000;

export class ChatApp {
  /** `me`: the GET /v1/me answer. `onSessionEnded(notice)`, `onSignOut()`: back to main.js. */
  constructor({ config, me, onSessionEnded, onSignOut }) {
    this.onSessionEnded = onSessionEnded;
    this.onSignOut = onSignOut;
    this.abort = new AbortController();
    this.store = new Store();
    this.store.setMe(me.user);
    this.store.org = me.org;
    this.people = new People(this.store);
    this.channels = new ChannelList(this.store, this.people);
    this.history = new History(this.store, { onChannelReset: (ch) => ch.id === this.openId && this.loadOpen() });
    this.gateway = new Gateway({
      urls: config.gateways,
      token: () => tokens.accessToken(),
      renewToken: () => tokens.refresh(),
      onFrame: (frame) => this.onFrame(frame),
      onSent: (frame) => this.afterSent(frame),
      onPhase: (phase) => this.onPhase(phase),
      onReady: () => {
        this.outbox.onReady();
        this.reads.onReady();
      },
      onDown: () => this.onDown(),
      onSessionEnded: () => this.onSessionEnded('Your session ended — sign in again.'),
    });
    this.outbox = new Outbox({
      store: this.store, gateway: this.gateway, history: this.history,
      onBounced: (entry) => this.composer.bounce(entry.channel, entry.body),
    });
    this.reads = new ReadMarkers({ store: this.store, gateway: this.gateway, canSee: () => this.visibleChannel() });
    this.typing = new Typing(this.store, (channelId) => channelId === this.openId && this.renderTyping());
    this.activity = new Activity(config.idleAfterMs, (status) => this.gateway.send({ op: 'presence', status }));

    this.openId = null;
    this.mode = 'channel';
    this.wanted = null; // a route waiting for the channel list
    this.everConnected = false;
    this.renderQueued = false;
    this.forceBottom = false;
    this.empty = false; // member of no channel: showing the "no channels" notice
    this.idleQueued = false;
    this.routed = false; // the first route after sign-in focuses the composer, later ones the heading
    this.focusTarget = null; // 'composer' | 'heading': where focus goes once the routed view shows
    this.busy = new Set(); // why ol#messages is aria-busy: 'switch', 'older', 'newer'
    this.savedScroll = null; // the list's scroll position while a token screen shows
    this.awaiting = null; // { id, focus, timer }: a channel to open once it is listed
    this.nextFocus = null; // where the next route puts focus, when not the default
    this.leaving = null; // { id, label }: the channel I am leaving (its removal says so)
    this.probing = 0; // the newest check of a route to an unlisted channel (archived?)
    this.buildViews();
  }

  buildViews() {
    const { store } = this;
    const onProfile = (userId, opener) => this.profile.open(userId, opener);
    this.profile = new ProfileDialog({ store, onOpened: (ch) => this.openedConversation(ch) });
    this.search = new SearchPanel({ store, people: this.people, onOpenHit: (ch, seq) => this.openHit(ch, seq) });
    this.composer = new Composer({ store, onSend: (ch, body) => this.send(ch, body), onTyping: (ch) => this.sendTyping(ch) });
    this.members = new MembersPanel({ store, people: this.people, onLeave: (ch) => this.leave(ch), onProfile });
    this.settings = new ChannelSettings({ store, onUnarchived: () => this.channels.refresh() });
    this.newChannel = new NewChannelForm({ onCreated: (ch) => this.openSoon(ch.id) });
    this.newDm = new NewDmForm({ store, people: this.people, onOpened: (ch) => this.openSoon(ch.id), onProfile });
    this.browse = new BrowseView({
      store,
      onOpen: (id) => this.openSoon(id),
      onOpenArchived: (entry) => this.openArchived(entry),
      onCreate: (opener) => this.newChannel.open(opener),
    });
    this.admin = new AdminView({ store, people: this.people });
    this.refs = buildShell({
      searchForm: this.search.form, searchPanel: this.search.panel, composerForm: this.composer.form,
      channelActions: this.members.actions, membersPanel: this.members.panel, settingsButton: this.settings.button,
      dialogs: [
        this.newChannel.element, this.newDm.element, ...this.members.dialogs, ...this.settings.dialogs,
        ...this.admin.dialogs, this.profile.element,
      ],
    });
    this.refs.browseView.append(this.browse.element);
    this.sidebar = new Sidebar(this.refs.sidebar, store, {
      onNewChannel: (opener) => this.newChannel.open(opener),
      onNewDm: (opener) => this.newDm.open(opener),
    });
    this.messages = new MessageList(this.refs.list, {
      store, history: this.history,
      onRetry: (cmid) => this.outbox.retry(cmid),
      onDiscard: (cmid) => this.outbox.discard(cmid),
      onProfile,
      onNearTop: () => this.loadOlder(),
      onNearBottom: () => this.loadNewer(),
      onScroll: () => this.scheduleRead(),
      onFocusLost: () => this.composer.focus(),
    });
    this.showMe();
  }

  get element() {
    return this.refs.app;
  }

  start() {
    const { signal } = this.abort;
    const { store } = this;
    store.on('messages', (id) => this.messagesChanged(id), signal);
    store.on('channels', () => this.channelsChanged(), signal);
    store.on('people', () => this.peopleChanged(), signal);
    store.on('presence', (ids) => ids.forEach((id) => updatePresenceDots(id, store.statusOf(id))), signal);
    store.on('me', () => this.showMe(), signal);
    this.listen(signal);
    this.gateway.start();
    this.activity.start(signal);
    this.people.loadDirectory();
    this.channels.refresh();
  }

  listen(signal) {
    const { refs } = this;
    refs.signOut.addEventListener('click', () => this.onSignOut(), { signal });
    refs.profileButton.addEventListener('click', () => {
      if (this.store.me) this.profile.open(this.store.me.id, refs.profileButton);
    }, { signal });
    refs.toggle.addEventListener('click', () => this.setSidebar(!this.sidebarOpen()), { signal });
    refs.sidebar.addEventListener('click', (event) => this.sidebarClick(event), { signal });
    // On the layout, not main: main is inert while the overlay is open, so clicks on it land here.
    refs.layout.addEventListener('click', (event) => {
      if (!refs.sidebar.contains(event.target)) this.setSidebar(false);
    }, { signal });
    // Widened past the narrow layout while the overlay was open: nothing may stay inert.
    window.matchMedia('(max-width: 719.98px)').addEventListener('change', () => this.setSidebar(false), { signal });
    refs.jumpLatest.addEventListener('click', () => this.jumpToLatest(), { signal });
    document.addEventListener('keydown', (event) => this.keydown(event), { signal });
    document.addEventListener('visibilitychange', () => this.scheduleRead(), { signal });
    window.addEventListener('focus', () => this.scheduleRead(), { signal });
  }

  stop() {
    this.abort.abort();
    this.cancelAwaiting();
    this.closeDialogs();
    this.gateway.stop();
    this.outbox.stop();
    this.typing.stop();
    this.reads.stop();
    this.history.stop();
    this.profile.stop();
    this.admin.stop();
  }

  /**
   * A token screen is about to replace the app (main.js): a detached list loses its scroll
   * position, so remember it for attached().
   */
  detach() {
    if (this.refs.app.isConnected) this.savedScroll = this.messages.scrollState();
    this.closeDialogs();
  }

  closeDialogs() {
    this.newChannel.close({ restoreFocus: false });
    this.newDm.dialog.close({ restoreFocus: false });
    this.members.confirm.close({ restoreFocus: false });
    this.settings.closeDialogs();
    this.profile.close({ restoreFocus: false });
    this.admin.closeDialogs();
  }

  attached() {
    if (this.savedScroll) this.messages.restoreScroll(this.savedScroll);
    this.savedScroll = null;
    this.scheduleRead();
  }

  /** Closes the socket before a deliberate logout, so its 4004 is not taken for an ended session. */
  disconnect() {
    this.gateway.stop();
  }

  // ---- routing ----

  route({ path, params }) {
    // Keyboard and screen-reader users follow the route: the new view's heading gets focus;
    // right after sign-in, the composer does (that is where one starts), and so it does in a
    // channel just created or opened (nextFocus).
    this.focusTarget = this.nextFocus ?? (this.routed ? 'heading' : 'composer');
    this.nextFocus = null;
    this.routed = true;
    // Gone somewhere else meanwhile: a channel still waiting to be listed does not pull them back.
    this.cancelAwaiting();
    this.probing += 1;
    const match = /^\/c\/(\d+)$/.exec(path);
    if (path === '/admin') this.showAdmin();
    else if (path === '/browse') this.showBrowse();
    else if (match) this.showChannel(Number(match[1]), Number(params.get('seq')) || null);
    else this.showDefault();
  }

  showDefault() {
    this.mode = 'channel';
    const id = this.defaultChannelId();
    if (id === null) {
      if (!this.channels.known) this.wanted = { id: null, seq: null };
      else this.showEmpty();
      return;
    }
    window.history.replaceState(null, '', `#/c/${id}`);
    this.showChannel(id, null);
  }

  defaultChannelId() {
    const list = this.store.listedChannels();
    const general = list.find((ch) => ch.kind === 'public' && ch.name === 'general');
    return (general ?? list[0])?.id ?? null;
  }

  /** Shows one of main's views: 'channel', 'browse' or 'admin'. */
  setView(view) {
    this.refs.channelView.hidden = view !== 'channel';
    this.refs.browseView.hidden = view !== 'browse';
    this.refs.adminView.hidden = view !== 'admin';
    this.sidebar.setBrowsing(view === 'browse');
  }

  /** Leaves the channel view for another: no channel is open meanwhile. */
  leaveChannelView(mode) {
    this.mode = mode;
    this.setView(mode);
    this.sidebar.setActive(null);
    this.openId = null;
    this.resetBusy();
    this.members.show(null);
    this.showChannelState(null);
  }

  showAdmin() {
    this.leaveChannelView('admin');
    this.admin.render(this.refs.adminView);
    this.setSidebar(false);
    this.applyFocus(this.admin.heading);
  }

  showBrowse() {
    this.leaveChannelView('browse');
    this.browse.show(this.refs.browseView);
    document.title = `Browse channels · ${this.store.org?.name ?? 'ThreadSpace'}`;
    this.setSidebar(false);
    this.applyFocus(this.browse.heading);
  }

  showChannel(id, seq) {
    this.mode = 'channel';
    this.setView('channel');
    const ch = this.store.channel(id);
    // An archived channel is not listed, but its history is shown (read-only).
    if (!ch?.listed && !ch?.archived) {
      if (!this.channels.known) {
        this.wanted = { id, seq };
        return;
      }
      this.probeArchived(id, seq);
      return;
    }
    if (this.openId !== id) this.switchTo(ch);
    else if (seq === null) this.history.leaveStretch(ch);
    this.setSidebar(false);
    this.applyFocus(this.refs.title);
    this.loadOpen(seq);
  }

  /**
   * A route to a channel that is not listed: one the server says is archived is shown read-only
   * (from the channel browser, a search hit, a link or a reload); anything else is turned away.
   */
  async probeArchived(id, seq) {
    const run = ++this.probing;
    let info = null;
    try {
      info = await api.getChannel(id);
    } catch {
      info = null; // 404: not a channel this person sees
    }
    if (run !== this.probing || this.mode !== 'channel') return;
    if (this.store.channel(id)?.listed) {
      this.showChannel(id, seq); // listed meanwhile
    } else if (info?.archived === true) {
      this.store.ensureChannel(id);
      this.store.applyChannelInfo(id, info);
      this.showChannel(id, seq);
    } else {
      this.turnAway(id);
    }
  }

  turnAway(id) {
    const fallback = this.defaultChannelId();
    if (fallback !== null && fallback !== id) {
      window.history.replaceState(null, '', `#/c/${fallback}`);
      this.showChannel(fallback, null);
    }
    this.showNotice('That channel does not exist, or you are not a member of it.');
    this.applyFocus(this.refs.title);
  }

  /** Shows an archived channel from the channel browser, read-only. */
  openArchived({ id, name }) {
    if (!Number.isSafeInteger(id)) return;
    const ch = this.store.ensureChannel(id);
    if (!ch.listed) this.store.applyChannelInfo(id, { kind: ch.kind ?? 'public', name, archived: true });
    this.navigateTo(id, 'heading');
  }

  // Member of no channel at all (a guest nobody added yet): say so instead of a blank page.
  showEmpty() {
    this.empty = true;
    this.openId = null;
    this.setView('channel');
    this.members.show(null);
    this.resetBusy();
    this.refs.title.textContent = 'No channels';
    this.messages.show(null);
    this.showChannelState(null);
    this.showNotice('You are not a member of any channel yet.');
    this.applyFocus(this.refs.title);
  }

  /** Moves focus as the last route asked, once its view shows (`heading`: that view's h2). */
  applyFocus(heading) {
    const target = this.focusTarget;
    this.focusTarget = null;
    if (!target || !this.refs.app.isConnected) return;
    // Another channel while writing (Alt+ArrowUp/Down): stay in the composer.
    if (this.mode === 'channel' && document.activeElement === this.composer.textarea) return;
    if (target === 'composer' && this.mode === 'channel' && this.composer.focus()) return;
    heading?.focus({ preventScroll: true });
  }

  switchTo(ch) {
    this.empty = false;
    this.resetBusy();
    this.setBusy('switch', true); // until its first page is rendered (loadOpen)
    this.composer.setEnabled(true);
    this.openId = ch.id;
    this.showNotice('');
    this.composer.show(ch);
    this.messages.show(ch);
    this.members.show(ch);
    this.sidebar.setActive(ch.id);
    this.showTitle(ch);
    this.showChannelState(ch);
    this.renderTyping();
    this.loadChannelInfo(ch);
  }

  /** The open channel's topic, its settings button, and whether it is archived (read-only). */
  showChannelState(ch) {
    const topic = typeof ch?.topic === 'string' ? ch.topic : '';
    if (this.refs.topic.textContent !== topic) this.refs.topic.textContent = topic;
    this.refs.topic.hidden = !topic;
    const archived = ch?.archived === true;
    this.refs.archived.hidden = !archived;
    this.composer.setEnabled(Boolean(ch?.listed) && !archived);
    this.settings.show(ch);
  }

  /**
   * GET /v1/channels/{id}: topic, purpose, creator (whether I may change it), archived. Asked
   * when a channel opens, at most once a minute per channel (`channel` frames keep it current).
   */
  loadChannelInfo(ch) {
    if (this.store.isDirect(ch) || Date.now() - (ch.infoAt ?? 0) < CHANNEL_INFO_TTL_MS) return;
    ch.infoAt = Date.now();
    api.getChannel(ch.id).then((info) => {
      if (this.store.channel(ch.id) === ch) this.store.applyChannelInfo(ch.id, info, { read: true });
    }, () => { ch.infoAt = 0; /* the header shows no topic; asked again next time */ });
  }

  // ---- the open channel ----

  openChannel() {
    return this.openId === null ? null : this.store.channel(this.openId);
  }

  loadOpen(seq = null) {
    const ch = this.openChannel();
    if (!ch) return;
    const task = seq ? this.history.jumpTo(ch, seq) : this.history.ensureLoaded(ch);
    this.scheduleRender();
    task.then((found) => {
      if (this.openId !== ch.id) return;
      this.renderNow();
      this.setBusy('switch', false);
      if (seq) this.revealHit(ch, seq, found);
      else this.fillViewport();
      this.scheduleRead();
    }, (error) => {
      if (this.openId === ch.id) this.setBusy('switch', false);
      this.historyFailed(ch, error, () => this.loadOpen(seq));
    });
  }

  /**
   * aria-busy on ol#messages while a channel's first page or another page is being put in, so
   * screen readers announce the result once rather than every message as it is inserted.
   */
  setBusy(reason, on) {
    if (on) this.busy.add(reason);
    else this.busy.delete(reason);
    if (this.busy.size) this.refs.list.setAttribute('aria-busy', 'true');
    else this.refs.list.removeAttribute('aria-busy');
  }

  resetBusy() {
    this.busy.clear();
    this.refs.list.removeAttribute('aria-busy');
  }

  revealHit(ch, seq, found) {
    window.history.replaceState(null, '', `#/c/${ch.id}`);
    if (found && this.messages.reveal(seq)) this.refs.list.focus({ preventScroll: true });
    else this.showNotice('That message is no longer available.');
  }

  // While the list has no scrollbar, older pages are the only way to fill it.
  fillViewport() {
    const ch = this.openChannel();
    if (!ch || ch.view || !ch.loaded || !ch.hasMoreBefore || !this.messages.isUnderfilled()) return;
    this.loadOlder().then(() => this.fillViewport());
  }

  loadOlder() {
    const ch = this.openChannel();
    if (!ch || this.history.isLoading(ch, 'older')) return Promise.resolve();
    const task = this.history.loadOlder(ch);
    const loading = this.history.isLoading(ch, 'older'); // false: nothing more to load
    if (loading) this.setBusy('older', true);
    this.scheduleRender(); // shows "Loading older messages…"
    const done = () => {
      if (!loading || ch !== this.openChannel()) return;
      this.renderNow(); // the page is in the list before it stops being busy
      this.setBusy('older', false);
    };
    return task.then(() => {
      done();
      // Still at the top once the page is in (a fast scroll, a short page): no scroll event
      // will come, so go on with the next page ourselves.
      const more = ch.view ? ch.view.moreBefore : ch.hasMoreBefore;
      if (more && ch === this.openChannel()) {
        requestAnimationFrame(() => { if (this.messages.isNearTop()) this.loadOlder(); });
      }
    }, (error) => {
      done();
      this.historyFailed(ch, error, () => this.loadOlder());
    });
  }

  loadNewer() {
    const ch = this.openChannel();
    if (!ch?.view) return;
    const task = this.history.loadNewer(ch);
    const loading = this.history.isLoading(ch, 'newer');
    if (loading) this.setBusy('newer', true);
    const done = () => {
      if (!loading || ch !== this.openChannel()) return;
      this.renderNow();
      this.setBusy('newer', false);
    };
    task.then(done, (error) => {
      done();
      this.historyFailed(ch, error, () => this.loadNewer());
    });
  }

  jumpToLatest() {
    const ch = this.openChannel();
    if (!ch) return;
    this.history.leaveStretch(ch);
    this.forceBottom = true;
    this.loadOpen();
  }

  historyFailed(ch, error, retry) {
    if (this.openId !== ch.id) return;
    this.scheduleRender();
    // 403 (e.g. not_member: an archived channel one was never in) or 404: trying again cannot help.
    if (error?.status === 403 || error?.status === 404) {
      this.showNotice(`Could not load messages: ${error.message}`);
      return;
    }
    const button = h('button', { type: 'button', text: 'Try again' });
    button.addEventListener('click', () => {
      this.showNotice('');
      retry();
    });
    this.showNotice(`Could not load messages: ${error.message}`, button);
  }

  showNotice(text, action = null) {
    this.refs.notice.replaceChildren(...(text ? [h('span', { text }), action ? ' ' : null, action].filter(Boolean) : []));
    this.refs.notice.hidden = !text;
  }

  showTitle(ch) {
    this.refs.title.textContent = this.store.channelLabel(ch);
    document.title = `${this.store.channelLabel(ch)} · ${this.store.org?.name ?? 'ThreadSpace'}`;
  }

  openHit(channelId, seq) {
    this.search.close({ focusInput: false });
    const hash = `#/c/${channelId}?seq=${seq}`;
    if (window.location.hash === hash) this.showChannel(channelId, seq);
    else window.location.hash = hash;
  }

  // ---- rendering ----

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => this.renderNow());
  }

  renderNow() {
    this.renderQueued = false;
    if (this.mode !== 'channel' || this.openId === null) return;
    const ch = this.openChannel();
    this.messages.render({ toBottom: this.forceBottom });
    this.forceBottom = false;
    this.refs.jumpLatest.hidden = !ch?.view;
  }

  messagesChanged(id) {
    this.sidebar.updateBadge(id);
    if (id !== this.openId) return;
    this.scheduleRender();
    this.scheduleRead();
  }

  channelsChanged() {
    this.sidebar.render();
    const ch = this.openChannel();
    if (ch) {
      this.showTitle(ch);
      this.composer.relabel(ch);
      this.members.update(ch);
      this.showChannelState(ch);
    } else if (this.openId !== null && this.mode === 'channel') {
      // The open channel is gone (we left it, or were removed).
      const left = this.leaving?.id === this.openId ? this.leaving : null;
      this.leaving = null;
      this.openId = null;
      // Left with the Leave button: focus goes on to the channel shown next.
      if (left) this.focusTarget = 'heading';
      this.showDefault();
      this.showNotice(left ? `You left ${left.label}.` : 'You are no longer a member of that channel.');
    } else if (this.empty && this.mode === 'channel' && this.defaultChannelId() !== null) {
      this.showDefault(); // the first channel of someone who had none
    }
    if (this.wanted && this.channels.known) {
      const { id, seq } = this.wanted;
      this.wanted = null;
      if (id === null) this.showDefault();
      else this.showChannel(id, seq);
    }
    this.openIfListed();
  }

  // ---- creating, opening, joining and leaving channels ----

  /**
   * Opens a channel this client was just added to (created, joined, or a conversation opened),
   * as soon as the channel list has it: the REST answer comes before the `member` frame and the
   * list's refresh, and a route to a channel not listed yet would be turned away.
   */
  openSoon(channelId, focus = 'composer') {
    if (!Number.isSafeInteger(channelId)) return;
    this.cancelAwaiting();
    const timer = setTimeout(() => {
      if (this.awaiting?.id !== channelId) return;
      this.awaiting = null;
      this.navigateTo(channelId, focus);
    }, OPEN_TIMEOUT_MS);
    this.awaiting = { id: channelId, focus, timer };
    if (!this.openIfListed()) this.channels.refresh();
  }

  openIfListed() {
    const want = this.awaiting;
    if (!want || !this.store.channel(want.id)?.listed) return false;
    this.cancelAwaiting();
    this.navigateTo(want.id, want.focus);
    return true;
  }

  cancelAwaiting() {
    if (!this.awaiting) return;
    clearTimeout(this.awaiting.timer);
    this.awaiting = null;
  }

  navigateTo(channelId, focus) {
    const hash = `#/c/${channelId}`;
    this.nextFocus = focus;
    if (window.location.hash === hash) this.route({ path: `/c/${channelId}`, params: new URLSearchParams() });
    else window.location.hash = hash;
  }

  /** "Message" on a profile opened a DM: the people picker, if it showed that profile, closes too. */
  openedConversation(conversation) {
    this.newDm.dialog.close({ restoreFocus: false });
    this.openSoon(conversation?.id);
  }

  /** DELETE my membership; the channel's removal (answer or `member` frame) moves on. */
  async leave(ch) {
    const label = this.store.channelLabel(ch);
    this.leaving = { id: ch.id, label };
    try {
      await api.removeMember(ch.id, this.store.me.id);
    } catch (error) {
      if (this.leaving?.id === ch.id) this.leaving = null;
      if (this.openId === ch.id) {
        this.showNotice(error.status === 404 ? `${label} no longer exists.` : `Could not leave ${label}: ${error.message}`);
      }
      return;
    }
    this.members.invalidate(ch.id);
    this.browse.membershipChanged(ch.id, false);
    // Whichever comes first, this or the `member` frame, removes it (the other finds it gone).
    if (this.store.channel(ch.id)?.listed) this.store.removeChannel(ch.id);
    if (this.leaving?.id === ch.id) this.leaving = null;
    this.channels.refresh();
  }

  onMember(frame) {
    this.channels.onMember(frame);
    if (!Number.isSafeInteger(frame.channel) || !this.store.isMe(frame.user)) return;
    this.members.invalidate(frame.channel);
    this.browse.membershipChanged(frame.channel, frame.change === 'joined');
  }

  peopleChanged() {
    this.sidebar.render();
    const ch = this.openChannel();
    if (ch) this.showTitle(ch);
    this.scheduleRender();
    this.renderTyping();
    this.members.peopleChanged();
    this.showMe();
  }

  renderTyping() {
    const text = this.openId === null ? '' : this.typing.text(this.openId);
    if (this.refs.typing.textContent !== text) this.refs.typing.textContent = text;
  }

  showMe() {
    const { me, org } = this.store;
    this.refs.me.textContent = me?.display_name ?? '';
    this.refs.orgName.textContent = org?.name ?? 'ThreadSpace';
    this.refs.adminLink.hidden = !(me?.role === 'owner' || me?.role === 'admin');
    this.sidebar.setRole(me?.role);
    if (this.openId !== null) this.settings.show(this.openChannel());
  }

  // ---- sidebar and keyboard ----

  sidebarOpen() {
    return this.refs.app.classList.contains('sidebar-open');
  }

  setSidebar(open) {
    if (open === this.sidebarOpen()) return;
    this.refs.app.classList.toggle('sidebar-open', open);
    this.refs.toggle.setAttribute('aria-expanded', String(open));
    // The overlay covers main: keep Tab and screen readers out of what it hides.
    this.refs.main.inert = open;
    if (open) this.sidebar.focusActive();
  }

  sidebarClick(event) {
    const link = event.target.closest('a.channel-link');
    if (!link) return;
    // The same channel again: back to its newest messages (the hash does not change).
    if (Number(link.dataset.channel) === this.openId && this.mode === 'channel') this.jumpToLatest();
    this.setSidebar(false);
  }

  keydown(event) {
    // The token screens can show while signed in: this app is then not on the page.
    if (!this.refs.app.isConnected) return;
    // A modal dialog has its own keys: Escape closes it (its `cancel`), and nothing behind it.
    if (event.target.closest?.('dialog')) return;
    if (event.key === 'Escape') {
      // The members panel first when focus is in it (or search is not open), focus back to its button.
      if (this.members.isOpen && (this.members.contains(event.target) || !this.search.isOpen)) this.members.close();
      else if (this.search.isOpen) this.search.close();
      else if (this.sidebarOpen()) {
        this.setSidebar(false);
        this.refs.toggle.focus();
      }
      return;
    }
    if (!event.altKey || (event.key !== 'ArrowUp' && event.key !== 'ArrowDown')) return;
    // Alt+ArrowDown opens a select's list, and inputs have their own use for it.
    if (event.target.closest?.('select, input')) return;
    event.preventDefault();
    const id = this.sidebar.neighbour(event.key === 'ArrowUp' ? -1 : 1);
    if (id !== null) window.location.hash = `#/c/${id}`;
  }

  // ---- sending, typing, reads ----

  send(channelId, body) {
    const ch = this.store.channel(channelId);
    if (ch?.view) this.history.leaveStretch(ch);
    this.forceBottom = true;
    this.typing.sent(channelId);
    this.outbox.send(channelId, body);
  }

  sendTyping(channelId) {
    if (!this.gateway.ready) return;
    this.typing.keystroke(channelId, () => {
      if (this.gateway.ready && this.openId === channelId) this.gateway.send({ op: 'typing', channel: channelId });
    });
  }

  scheduleRead() {
    this.reads.schedule();
  }

  // Only what the person can see counts as read: the open channel, page visible and focused,
  // scrolled to the newest message.
  visibleChannel() {
    const ch = this.openChannel();
    // Not on the page (a token screen shown while signed in): the detached list would report
    // "scrolled to the bottom" and mark everything read.
    if (!this.refs.app.isConnected) return null;
    // Nothing is marked read in an archived channel (it left my channels).
    if (this.mode !== 'channel' || !ch || ch.view || !ch.loaded || ch.archived) return null;
    if (document.visibilityState !== 'visible' || !document.hasFocus() || !this.messages.isAtBottom()) return null;
    return ch;
  }

  // ---- gateway frames ----

  onPhase(phase) {
    if (phase === 'ready') this.everConnected = true;
    showConnection(this.refs.status, phase, this.everConnected);
    document.documentElement.dataset.state = phase === 'ready' ? 'ready' : 'connecting';
  }

  onDown() {
    this.outbox.onDown();
    this.reads.onDown();
  }

  // A `send` or `read` counts as `online` on the gateway (protocol.md, presence): while idle,
  // say idle again after them — once per batch (a reconnect's flush writes many).
  afterSent(frame) {
    if ((frame.op !== 'send' && frame.op !== 'read') || this.activity.status !== 'idle' || this.idleQueued) return;
    this.idleQueued = true;
    queueMicrotask(() => {
      this.idleQueued = false;
      if (this.activity.status === 'idle') this.gateway.send({ op: 'presence', status: 'idle' });
    });
  }

  onFrame(frame) {
    switch (frame.op) {
      case 'welcome': return this.onWelcome(frame);
      case 'msg': return this.onMsg(frame);
      case 'ack': return this.outbox.onAck(frame);
      case 'error': return this.onError(frame);
      case 'member': return this.onMember(frame);
      case 'channel': return this.channels.onChannel(frame);
      case 'presence': return this.store.updatePresence(frame.users);
      case 'typing': return this.typing.received(frame);
      case 'read': return this.reads.onRead(frame);
      case 'read_ack': return this.reads.onAck(frame);
      case 'history_required': return this.history.fillGap(frame.after_seq, frame.through_seq);
      case 'resumed': return this.scheduleRead();
      default: return undefined; // pong, reconnect: handled by the socket
    }
  }

  onWelcome(frame) {
    if (frame.user) this.store.setMe(frame.user);
    if (frame.limits) this.store.limits = { ...this.store.limits, ...frame.limits };
    this.channels.fromWelcome(frame.channels);
    // `channel` frames are not replayed on resume: details read before this connection may be stale.
    if (this.channels.welcomes > 1) {
      for (const ch of this.store.channels.values()) ch.infoAt = 0;
      const open = this.openChannel();
      if (open) this.loadChannelInfo(open);
    }
    this.store.replacePresence(frame.presence);
    if (this.activity.status === 'idle') this.gateway.send({ op: 'presence', status: 'idle' });
  }

  onMsg(frame) {
    if (!Number.isSafeInteger(frame.channel)) return;
    this.store.addMessages(frame.channel, [frame]);
    this.typing.clear(frame.channel, frame.sender);
    this.people.ensure([frame.sender]);
    if (!this.store.channel(frame.channel)?.listed) this.channels.refresh();
  }

  onError(frame) {
    if (frame.ref && (this.outbox.onError(frame) || this.reads.onError(frame))) return;
    console.warn(`ThreadSpace gateway error: ${frame.code}`);
  }
}
