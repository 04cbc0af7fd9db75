// views/admin.js — #/admin for owners and admins (docs/accounts.md, Permission matrix): invite
// links, the people table (roles, deactivate/reactivate; for owners "Erase…": views/erase.js),
// for owners the sign-up domain, the data rights (erasure policy, org export:
// views/datarights.js), the integrations (bots, their tokens and webhooks: views/integrations.js),
// and the audit log (GET /v1/audit), which reloads after each action taken here so its record shows.
// The controls offer only what the caller's role allows; the server decides anyway, and its
// refusals (403 forbidden, 409 conflict) are shown in the status line.

import * as api from '../api.js';
import { field, h, setMessage, srOnly } from '../dom.js';
import { formatDateTime, isoTime } from '../format.js';
import { DataRights } from './datarights.js';
import { EraseDialog } from './erase.js';
import { Integrations } from './integrations.js';

const ROLES = ['owner', 'admin', 'member', 'guest'];
const LOW_ROLES = ['member', 'guest'];
const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member', guest: 'Guest', bot: 'Bot' };

// The audit log's areas (the filter) and a label per action (docs/accounts.md, Audit log).
const AUDIT_AREAS = [
  ['all', 'All actions'], ['login', 'Logins'], ['session', 'Sessions'], ['password', 'Passwords'],
  ['invite', 'Invites'], ['signup', 'Sign-ups'], ['role', 'Role changes'],
  ['user', 'Deactivations and reactivations'], ['org', 'Org changes'], ['member', 'Channel memberships'],
  ['bot', 'Bots and integrations'],
];
const ACTION_LABEL = {
  'org.created': 'Org created',
  'login.succeeded': 'Logged in',
  'login.failed': 'Login failed',
  'session.refresh_reused': 'Session ended: refresh token reused',
  'session.logged_out': 'Logged out',
  'session.signed_out_everywhere': 'Signed out everywhere',
  'password.changed': 'Password changed',
  'password.reset': 'Password reset',
  'invite.created': 'Invite created',
  'invite.accepted': 'Invite accepted',
  'signup.completed': 'Signed up',
  'role.changed': 'Role changed',
  'user.deactivated': 'Deactivated',
  'user.reactivated': 'Reactivated',
  'org.signup_domain_set': 'Sign-up domain set',
  'member.added': 'Added to channel',
  'member.removed': 'Removed from channel',
  'bot.created': 'Bot created',
  'bot.credential_issued': 'Bot token or webhook issued',
  'bot.credential_revoked': 'Bot token or webhook revoked',
  'export.requested': 'Export requested',
  'export.downloaded': 'Export downloaded',
  'user.erasure_requested': 'Erasure requested',
  'user.erased': 'Erased',
  'org.erasure_policy_set': 'Erasure policy set',
};
const AUDIT_COLUMNS = ['Time', 'Who', 'Action', 'About', 'Details', 'IP'];
const AUDIT_PAGE = 50;

export class AdminView {
  constructor({ store, people }) {
    this.store = store;
    this.people = people;
    this.status = null;
    this.tbody = null;
    this.heading = null; // the page's h2: focus moves there when the route opens it
    this.audit = null; // the audit log's elements, its next page and its load counter
    this.integrations = new Integrations({ store, onChanged: (change) => this.integrationsChanged(change) });
    this.dataRights = new DataRights({ store, onChanged: () => this.loadAudit() });
    this.erase = new EraseDialog({
      policy: () => this.dataRights.policy,
      onStarted: (user) => {
        this.say(`Erasing ${user.display_name}: they are deactivated, and their data is being erased.`);
        this.loadPeople();
        this.loadAudit();
      },
      onFinished: (user, job) => {
        this.say(job.state === 'done'
          ? `${user.display_name} was erased.`
          : `Erasing ${user.display_name} failed: ${job.error || 'the job failed.'}`);
        this.loadPeople();
        this.loadAudit();
      },
    });
    // The row was drawn again meanwhile (its opener is gone): focus its new controls. Focus may
    // still sit on the closed dialog's button (the browser moves it off only later): lost too.
    this.erase.dialog.onClose = () => {
      const active = document.activeElement;
      const lost = !active || active === document.body || !active.isConnected || this.erase.element.contains(active);
      if (lost && this.erase.user) this.refocus(this.erase.user.id, 'button.erase', active);
    };
  }

  /** The modal dialogs of the integrations and of erasing (they go into the page, after main). */
  get dialogs() {
    return [...this.integrations.dialogs, this.erase.element];
  }

  closeDialogs() {
    this.integrations.closeDialogs();
    this.erase.close({ restoreFocus: false });
  }

  /** The app is going away: jobs being followed (an export, erasures) stop. */
  stop() {
    this.dataRights.stop();
    this.erase.stop();
  }

  get callerRole() {
    return this.store.me?.role;
  }

  isManager() {
    return this.callerRole === 'owner' || this.callerRole === 'admin';
  }

  /** Builds the page into `container` and loads the people. */
  render(container) {
    if (!this.isManager()) {
      this.heading = h('h2', { tabindex: '-1', text: 'People' });
      container.replaceChildren(
        this.heading,
        h('p', { class: 'notice', role: 'status', text: 'Only owners and admins can manage people.' }),
      );
      return;
    }
    this.status = h('p', { id: 'admin-status', class: 'admin-status', role: 'status' });
    this.tbody = h('tbody');
    this.heading = h('h2', { tabindex: '-1', text: 'People and invites' });
    container.replaceChildren(
      this.heading,
      this.status,
      this.inviteSection(),
      this.peopleSection(),
      this.callerRole === 'owner' ? this.signupDomainSection() : null,
      this.dataRights.render(),
      this.integrations.render(),
      this.auditSection(),
    );
    this.loadPeople();
    this.loadAudit();
  }

  say(text) {
    if (this.status) this.status.textContent = text;
  }

  /** An integrations action succeeded: its audit record shows; a new or (de)activated bot in the people table too. */
  integrationsChanged({ people = false } = {}) {
    if (people) this.loadPeople();
    this.loadAudit();
  }

  // ---- invites ----

  inviteSection() {
    const roles = this.callerRole === 'owner' ? ROLES : LOW_ROLES;
    const role = field('invite-role', 'Role', { tag: 'select' });
    for (const name of roles) role.input.append(h('option', { value: name, text: ROLE_LABEL[name], selected: name === 'member' }));
    const email = field('invite-email-input', 'Email (optional)', { type: 'email', autocomplete: 'off' },
      'With an address, the link is mailed and only that address can use it.');
    const create = h('button', { id: 'invite-create', type: 'submit', class: 'primary', text: 'Create invite link' });
    const link = h('input', { id: 'invite-link', type: 'text', readOnly: true, class: 'invite-link' });
    const copy = h('button', { id: 'invite-copy', type: 'button', text: 'Copy' });
    const result = h('div', { class: 'invite-result', hidden: true },
      h('label', { for: 'invite-link', text: 'Invite link (valid 7 days, single use)' }),
      h('div', { class: 'inline-row' }, link, copy));
    const form = h('form', { id: 'invite-form', class: 'admin-card', novalidate: true },
      h('h3', { text: 'Invite someone' }), role.el, email.el, create, result);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      create.disabled = true;
      try {
        const answer = await api.createInvite(role.input.value, email.input.value.trim() || null);
        link.value = this.shareableLink(answer.link);
        result.hidden = false;
        this.say(email.input.value.trim() ? 'Invite created and mailed.' : 'Invite created: share the link.');
        this.loadAudit();
      } catch (error) {
        this.say(`Could not create the invite: ${error.message}`);
      } finally {
        create.disabled = false;
      }
    });
    copy.addEventListener('click', () => this.copy(link));
    return form;
  }

  // The invite answer names no org, but the invitee signs in with the org's slug afterwards:
  // carry it in the link so the acceptance form can fill it in.
  shareableLink(link) {
    const slug = this.store.org?.slug;
    if (typeof link !== 'string' || !slug || !link.includes('#/invite?') || link.includes('&org=')) return link || '';
    return `${link}&org=${encodeURIComponent(slug)}`;
  }

  async copy(input) {
    try {
      await navigator.clipboard.writeText(input.value);
      this.say('Link copied.');
    } catch {
      input.focus();
      input.select();
      this.say('Press Ctrl+C (or ⌘C) to copy the selected link.');
    }
  }

  // ---- people ----

  peopleSection() {
    return h('section', { class: 'admin-card', 'aria-labelledby': 'people-heading' },
      h('h3', { id: 'people-heading', text: 'People' }),
      h('table', { class: 'people' },
        h('thead', null, h('tr', null,
          h('th', { scope: 'col', text: 'Name' }),
          h('th', { scope: 'col', text: 'Email' }),
          h('th', { scope: 'col', text: 'Role' }),
          h('th', { scope: 'col', text: 'Status' }))),
        this.tbody));
  }

  async loadPeople() {
    const ok = await this.people.reloadDirectory();
    if (!ok) this.say('Could not load the people of this org.');
    this.renderPeople();
  }

  renderPeople() {
    if (!this.tbody) return;
    const users = [...this.store.users.values()]
      .filter((user) => user && user.role)
      .sort((a, b) => a.display_name.localeCompare(b.display_name) || a.id - b.id);
    this.tbody.replaceChildren(...users.map((user) => this.personRow(user)));
  }

  personRow(user) {
    const self = this.store.isMe(user.id);
    const row = h('tr', { class: user.deactivated ? 'person deactivated' : 'person', dataset: { user: user.id } });
    row.append(
      h('td', null,
        h('span', { class: 'person-name', text: user.display_name }),
        h('span', { class: 'person-handle', text: ` @${user.handle}` }),
        self ? h('span', { class: 'tag', text: ' (you)' }) : null),
      h('td', { class: 'person-email', text: user.email ?? '' }),
      h('td', null, this.roleSelect(user, self)),
      h('td', null, this.activationButton(user, self)),
    );
    return row;
  }

  roleSelect(user, self) {
    const allowed = this.assignableRoles(user);
    const options = allowed.includes(user.role) ? allowed : [user.role, ...allowed];
    const id = `role-${user.id}`;
    const select = h('select', { id, class: 'role-select', disabled: self || allowed.length === 0 });
    for (const name of options) select.append(h('option', { value: name, text: ROLE_LABEL[name] ?? name, selected: name === user.role }));
    select.addEventListener('change', () => this.changeRole(user, select));
    return h('div', null, h('label', { for: id, class: 'visually-hidden', text: `Role of ${user.display_name}` }), select);
  }

  // Owners change anyone's role; admins move people between member and guest only. A bot's role
  // never changes.
  assignableRoles(user) {
    if (user.role === 'bot') return [];
    if (this.callerRole === 'owner') return ROLES;
    if (this.callerRole === 'admin' && LOW_ROLES.includes(user.role)) return LOW_ROLES;
    return [];
  }

  canToggle(user, self) {
    if (self) return false;
    return this.callerRole === 'owner'
      || (this.callerRole === 'admin' && (LOW_ROLES.includes(user.role) || user.role === 'bot'));
  }

  activationButton(user, self) {
    const action = user.deactivated ? 'reactivate' : 'deactivate';
    const button = h('button', { type: 'button', class: action, disabled: !this.canToggle(user, self) },
      user.deactivated ? 'Reactivate' : 'Deactivate', srOnly(` ${user.display_name}`));
    button.addEventListener('click', () => this.toggleActive(user, action, button));
    return h('div', { class: 'person-actions' },
      h('span', { class: 'person-state', text: user.deactivated ? 'Deactivated' : 'Active' }), button,
      this.eraseButton(user, self));
  }

  // Owners erase anyone but themselves; an erased account's handle is `erased-<id>` (a prefix
  // nobody else may use), and it cannot be erased twice.
  eraseButton(user, self) {
    if (this.callerRole !== 'owner' || self || String(user.handle ?? '').startsWith('erased-')) return null;
    const button = h('button', { type: 'button', class: 'erase danger-outline', dataset: { test: 'erase-user' } },
      'Erase…', srOnly(` ${user.display_name}`));
    button.addEventListener('click', () => this.erase.open(user, button));
    return button;
  }

  async changeRole(user, select) {
    const role = select.value;
    select.disabled = true;
    try {
      const updated = await api.setRole(user.id, role);
      this.store.setUser(updated);
      this.say(`${updated.display_name} is now ${ROLE_LABEL[updated.role] ?? updated.role}.`);
      this.loadAudit();
    } catch (error) {
      this.say(`Could not change the role of ${user.display_name}: ${error.message}`);
      if (error.status === 409) await this.people.reloadDirectory();
    }
    this.renderPeople();
    this.refocus(user.id, 'select.role-select', select);
  }

  async toggleActive(user, action, button) {
    button.disabled = true;
    try {
      const updated = action === 'deactivate' ? await api.deactivate(user.id) : await api.reactivate(user.id);
      this.store.setUser(updated);
      this.say(`${updated.display_name} was ${updated.deactivated ? 'deactivated' : 'reactivated'}.`);
      this.loadAudit();
      if (updated.role === 'bot') this.integrations.load();
    } catch (error) {
      this.say(`Could not ${action} ${user.display_name}: ${error.message}`);
      if (error.status === 409) await this.people.reloadDirectory();
    }
    this.renderPeople();
    // The button may have turned from Deactivate into Reactivate: any button of the row.
    this.refocus(user.id, '.person-actions button', button);
  }

  /**
   * The re-render replaced the row whose control was used: put focus on the new row's control,
   * unless it moved somewhere else meanwhile (only when it was on the old control, now gone).
   */
  refocus(userId, selector, old) {
    const active = document.activeElement;
    if (active && active !== document.body && active !== old && active.isConnected) return;
    const row = this.tbody?.querySelector(`tr.person[data-user="${CSS.escape(String(userId))}"]`);
    const control = row?.querySelector(selector);
    if (control && !control.disabled) control.focus();
    else row?.querySelector('select:not([disabled]), button:not([disabled])')?.focus();
  }

  // ---- sign-up domain (owners) ----

  signupDomainSection() {
    const domain = field('signup-domain', 'Sign-up domain', {
      type: 'text', value: this.store.org?.signup_domain ?? '', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'example.com',
    }, 'Anyone with an address at this domain may sign up as a member. Leave empty for invites only.');
    const save = h('button', { id: 'signup-domain-save', type: 'submit', text: 'Save domain' });
    const form = h('form', { id: 'signup-domain-form', class: 'admin-card', novalidate: true },
      h('h3', { text: 'Sign-up by email domain' }), domain.el, save);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        const org = await api.setSignupDomain(domain.input.value.trim() || null);
        this.store.org = { ...this.store.org, ...org };
        domain.input.value = org.signup_domain ?? '';
        this.say(org.signup_domain ? `People at ${org.signup_domain} may now sign up.` : 'Sign-up by domain is off: invites only.');
        this.loadAudit();
      } catch (error) {
        this.say(`Could not save the sign-up domain: ${error.message}`);
      } finally {
        save.disabled = false;
      }
    });
    return form;
  }

  // ---- audit log ----

  auditSection() {
    const filter = field('audit-filter', 'Show', { tag: 'select' });
    for (const [value, label] of AUDIT_AREAS) filter.input.append(h('option', { value, text: label }));
    filter.input.addEventListener('change', () => this.loadAudit());
    const rows = h('tbody');
    // Focusable so focus has somewhere to go when "Load older" disappears under it.
    const table = h('table', { id: 'audit-log', class: 'audit', 'aria-labelledby': 'audit-heading', tabindex: '-1' },
      h('thead', null, h('tr', null, AUDIT_COLUMNS.map((name) => h('th', { scope: 'col', text: name })))),
      rows);
    const more = h('button', { id: 'audit-more', class: 'audit-more', type: 'button', hidden: true, text: 'Load older' });
    // Not disabled while loading: a disabled button would drop the focus.
    more.addEventListener('click', () => this.audit.loading || this.loadAudit(this.audit.next));
    const error = h('p', { id: 'audit-error', class: 'error', role: 'alert', hidden: true });
    const empty = h('p', { class: 'audit-empty', hidden: true });
    this.audit = { filter: filter.input, table, rows, more, error, empty, next: null, run: 0, loading: false };
    return h('section', { class: 'admin-card audit-card', 'aria-labelledby': 'audit-heading' },
      h('h3', { id: 'audit-heading', text: 'Audit log' }), filter.el, error, table, empty, more);
  }

  /**
   * Loads the newest page of the chosen area (replacing the list), or with `before` the page
   * below it (appended). A reload started meanwhile makes an older answer void.
   */
  async loadAudit(before = null) {
    const audit = this.audit;
    if (!audit) return;
    const run = before === null ? ++audit.run : audit.run;
    const area = audit.filter.value;
    audit.loading = true;
    audit.table.setAttribute('aria-busy', 'true');
    let page = null;
    let failure = null;
    try {
      // The directory names the people in the rows (it is usually loaded already).
      [page] = await Promise.all([
        api.audit({ action: area === 'all' ? null : area, before, limit: AUDIT_PAGE }),
        this.people.loadDirectory(),
      ]);
    } catch (error) {
      failure = error;
    }
    if (run !== audit.run) return;
    if (!failure) {
      const events = (page?.events || []).filter((event) => Number.isSafeInteger(event?.id));
      const rows = events.map((event) => this.auditRow(event));
      if (before === null) audit.rows.replaceChildren(...rows);
      else audit.rows.append(...rows);
      audit.next = Number.isSafeInteger(page?.next_before) ? page.next_before : null;
    } else if (before === null) {
      // Rows of another filter would mislead: show none.
      audit.rows.replaceChildren();
      audit.next = null;
    }
    setMessage(audit.error, failure ? `Could not load the audit log: ${failure.message}` : '');
    setMessage(audit.empty, failure || audit.rows.childElementCount ? '' : 'Nothing recorded here yet.');
    const hadFocus = document.activeElement === audit.more;
    audit.loading = false;
    audit.table.removeAttribute('aria-busy');
    audit.more.hidden = audit.next === null;
    if (hadFocus && audit.more.hidden) audit.table.focus();
  }

  auditRow(event) {
    const cell = (label, content) => h('td', { dataset: { label } }, content || null);
    const when = Number.isFinite(event.at) ? h('time', { datetime: isoTime(event.at), text: formatDateTime(event.at) }) : null;
    return h('tr', { class: 'audit-event', dataset: { id: event.id, action: scalar(event.action) } },
      cell('Time', when),
      cell('Who', Number.isSafeInteger(event.actor) ? this.store.displayName(event.actor) : '—'),
      cell('Action', Object.hasOwn(ACTION_LABEL, event.action) ? ACTION_LABEL[event.action] : scalar(event.action)),
      cell('About', this.auditAbout(event)),
      cell('Details', auditDetail(event.detail)),
      cell('IP', scalar(event.ip)));
  }

  /** "Ada", "#general", "Ada in #general". */
  auditAbout(event) {
    const parts = [];
    if (Number.isSafeInteger(event.target_user)) parts.push(this.store.displayName(event.target_user));
    if (Number.isSafeInteger(event.target_channel)) {
      const ch = this.store.channel(event.target_channel);
      parts.push(ch ? this.store.channelLabel(ch) : `channel ${event.target_channel}`);
    }
    return parts.join(' in ');
  }
}

// A detail value shown as text; objects and null are left out.
function scalar(value) {
  return ['string', 'number', 'boolean'].includes(typeof value) ? String(value) : null;
}

/** A short text from an event's `detail`: "member → guest", "ada@example.com", "role: member". */
function auditDetail(detail) {
  if (!detail || typeof detail !== 'object') return null;
  const { from, to, email, ...rest } = detail;
  const parts = [];
  if (from !== undefined || to !== undefined) parts.push(`${scalar(from) ?? '?'} → ${scalar(to) ?? '?'}`);
  if (scalar(email)) parts.push(scalar(email));
  for (const [key, value] of Object.entries(rest)) {
    if (key === 'domain' && value === null) parts.push('domain: none');
    else if (scalar(value) !== null) parts.push(`${key}: ${scalar(value)}`);
  }
  return parts.join(', ');
}
