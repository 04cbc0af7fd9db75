// views/auth.js — the signed-out screens: sign in, create an org, accept an invite, sign up by
// email domain, reset a password. Forms that create an account sign in right after.
// A failed login never says which of org, email or password was wrong (docs/accounts.md).

import * as api from '../api.js';
import { field, h, setMessage } from '../dom.js';

const LOGIN_FAILED = 'Wrong org, email or password.';

/** Builds the screen for an auth route into `root`. `ctx`: { path, params, notice, org, signIn }. */
export function renderAuth(root, ctx) {
  const screens = {
    '/new-org': newOrgScreen,
    '/invite': inviteScreen,
    '/signup': ctx.params.get('token') ? signupCompleteScreen : signupScreen,
    '/reset': ctx.params.get('token') ? resetCompleteScreen : resetScreen,
  };
  const screen = (screens[ctx.path] ?? loginScreen)(ctx);
  forgetToken(ctx);
  root.replaceChildren(h('main', { class: 'auth', id: 'auth' },
    h('div', { class: 'auth-card' }, h('h1', { class: 'brand', text: 'ThreadSpace' }), screen)));
  // Start where typing is needed: the first empty field (the org may be prefilled).
  const inputs = [...root.querySelectorAll('input:not([readonly])')];
  (inputs.find((input) => !input.value) ?? inputs[0])?.focus();
}

/**
 * The screen holds the mailed token now: take it out of the address, so it stays neither in the
 * history nor in a copied URL (the rest, such as `org=`, stays). No hashchange follows.
 */
function forgetToken(ctx) {
  if (!ctx.params.has('token')) return;
  const rest = new URLSearchParams(ctx.params);
  rest.delete('token');
  const query = rest.toString();
  window.history.replaceState(window.history.state, '', `#${ctx.path}${query ? `?${query}` : ''}`);
}

/** A user-facing sentence for an API error on these screens. */
function explain(error, overrides = {}) {
  if (overrides[error.code]) return overrides[error.code];
  if (error.code === 'rate_limited' && error.retryAfter && !/\d/.test(error.message)) {
    return `${error.message} (retry in ${error.retryAfter} s)`;
  }
  return error.message || 'Something went wrong. Try again.';
}

/**
 * One form: a heading, labelled fields, a submit button, an error line (role=alert) and an
 * optional notice line. `submit(values, ui)` runs with the button disabled.
 */
function authForm({ id, title, intro, fields, submitId, submitText, errorId, noticeId, notice, submit, links = [] }) {
  const inputs = {};
  const fieldEls = fields.map(([key, fieldId, label, props, hint]) => {
    const made = field(fieldId, label, props, hint);
    inputs[key] = made.input;
    return made.el;
  });
  const error = h('p', { id: errorId, class: 'error', role: 'alert', hidden: true });
  const noticeEl = noticeId ? h('p', { id: noticeId, class: 'notice', role: 'status', hidden: !notice, text: notice || '' }) : null;
  const button = h('button', { id: submitId, type: 'submit', class: 'primary', text: submitText });
  const form = h('form', { id, class: 'auth-form' }, fieldEls, error, button);
  const ui = {
    error: (text) => setMessage(error, text),
    notice: (text) => noticeEl && setMessage(noticeEl, text),
    inputs,
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    ui.error('');
    button.disabled = true;
    try {
      await submit(values(inputs), ui);
    } catch (err) {
      ui.error(err.message || 'Something went wrong. Try again.');
    } finally {
      button.disabled = false;
    }
  });
  return h('section', { class: 'auth-screen', 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title`, text: title }),
    intro ? h('p', { class: 'intro', text: intro }) : null,
    noticeEl, form,
    links.length ? h('ul', { class: 'auth-links' }, links.map(([href, text]) => h('li', null, h('a', { href, text })))) : null);
}

function values(inputs) {
  const out = {};
  for (const [key, input] of Object.entries(inputs)) out[key] = input.type === 'password' ? input.value : input.value.trim();
  return out;
}

const slugProps = (value) => ({ value, required: true, autocomplete: 'organization', autocapitalize: 'none', spellcheck: 'false' });
const emailProps = (autocomplete = 'email') => ({ type: 'email', required: true, autocomplete, autocapitalize: 'none', spellcheck: 'false' });
const newPassword = { type: 'password', required: true, autocomplete: 'new-password', minlength: 8, maxlength: 256 };
const PASSWORD_HINT = 'At least 8 characters.';
const HANDLE_HINT = 'Lower-case letters, digits, ".", "_" and "-".';

// Slugs are lower-case; accept "Acme" as typed.
const slug = (value) => value.toLowerCase();

/** Logs in after an account was created; explains if that login fails. */
async function signInAfterCreate(ctx, org, email, password) {
  try {
    await ctx.signIn(await api.login(org, email, password), org);
  } catch (error) {
    const why = error.code === 'login_failed' ? LOGIN_FAILED : explain(error);
    throw new Error(`Your account was created, but signing in failed: ${why} Check the organization and sign in.`);
  }
}

function loginScreen(ctx) {
  return authForm({
    id: 'login-form', title: 'Sign in', submitId: 'login-submit', submitText: 'Sign in',
    errorId: 'login-error', noticeId: 'login-notice', notice: ctx.notice,
    fields: [
      ['org', 'login-org', 'Organization', slugProps(ctx.org)],
      ['email', 'login-email', 'Email', emailProps('username')],
      ['password', 'login-password', 'Password', { type: 'password', required: true, autocomplete: 'current-password' }],
    ],
    submit: async (v, ui) => {
      try {
        await ctx.signIn(await api.login(slug(v.org), v.email, v.password), slug(v.org));
      } catch (error) {
        ui.error(explain(error, { login_failed: LOGIN_FAILED }));
        ui.inputs.password.value = '';
      }
    },
    links: [['#/signup', 'Sign up with your work email'], ['#/reset', 'Forgot your password?'], ['#/new-org', 'Create a new organization']],
  });
}

function newOrgScreen(ctx) {
  return authForm({
    id: 'new-org-form', title: 'Create an organization', submitId: 'new-org-submit',
    submitText: 'Create organization', errorId: 'new-org-error',
    fields: [
      ['slug', 'new-org-slug', 'Organization address (slug)', slugProps(''), 'Lower-case letters, digits and "-"; you sign in with it.'],
      ['name', 'new-org-name', 'Organization name', { required: true, autocomplete: 'organization' }],
      ['email', 'new-org-email', 'Your email', emailProps()],
      ['handle', 'new-org-handle', 'Your handle', { required: true, autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false' }, HANDLE_HINT],
      ['displayName', 'new-org-display-name', 'Your display name', { required: true, autocomplete: 'name' }],
      ['password', 'new-org-password', 'Password', newPassword, PASSWORD_HINT],
    ],
    submit: async (v, ui) => {
      const org = slug(v.slug);
      try {
        await api.createOrg(org, v.name, { email: v.email, handle: v.handle, display_name: v.displayName, password: v.password });
      } catch (error) {
        ui.error(explain(error, { conflict: 'That organization address is taken. Choose another.' }));
        return;
      }
      await signInAfterCreate(ctx, org, v.email, v.password);
    },
    links: [['#/login', 'Already have an account? Sign in']],
  });
}

function inviteScreen(ctx) {
  const token = ctx.params.get('token');
  if (!token) return missingToken('Accept an invite', 'This invite link is incomplete. Ask for a new one.');
  return authForm({
    id: 'invite-form', title: 'Join your team', submitId: 'invite-submit', submitText: 'Create account',
    errorId: 'invite-error', intro: 'You were invited to ThreadSpace. Choose how you appear and a password.',
    fields: [
      ['org', 'invite-org', 'Organization', slugProps(ctx.params.get('org') || ctx.org), 'The organization that invited you (its sign-in name).'],
      ['handle', 'invite-handle', 'Handle', { required: true, autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false' }, HANDLE_HINT],
      ['displayName', 'invite-display-name', 'Display name', { required: true, autocomplete: 'name' }],
      ['email', 'invite-email', 'Email (optional if the invite named it)', { type: 'email', autocomplete: 'email', autocapitalize: 'none', spellcheck: 'false' }],
      ['password', 'invite-password', 'Password', newPassword, PASSWORD_HINT],
    ],
    submit: async (v, ui) => {
      const body = { token, handle: v.handle, display_name: v.displayName, password: v.password };
      if (v.email) body.email = v.email;
      let user;
      try {
        user = await api.acceptInvite(body);
      } catch (error) {
        ui.error(explain(error, { token_invalid: 'This invite is no longer valid (used or expired). Ask for a new one.' }));
        return;
      }
      await signInAfterCreate(ctx, slug(v.org), user.email || v.email, v.password);
    },
    links: [['#/login', 'Already have an account? Sign in']],
  });
}

function signupScreen(ctx) {
  return authForm({
    id: 'signup-form', title: 'Sign up', submitId: 'signup-submit', submitText: 'Send sign-up link',
    errorId: 'signup-error', noticeId: 'signup-notice',
    intro: 'If your organization allows sign-up for your email domain, we mail you a link.',
    fields: [
      ['org', 'signup-org', 'Organization', slugProps(ctx.org)],
      ['email', 'signup-email', 'Work email', emailProps()],
    ],
    submit: async (v, ui) => {
      try {
        await api.requestSignup(slug(v.org), v.email);
        ui.notice(`Check your mail: we sent a sign-up link to ${v.email}.`);
      } catch (error) {
        ui.error(explain(error, { signup_closed: 'Sign-up is not open for that address. Ask for an invite.' }));
      }
    },
    links: [['#/login', 'Sign in'], ['#/new-org', 'Create a new organization']],
  });
}

function signupCompleteScreen(ctx) {
  const token = ctx.params.get('token');
  return authForm({
    id: 'signup-complete-form', title: 'Finish signing up', submitId: 'signup-complete-submit',
    submitText: 'Create account', errorId: 'signup-error',
    fields: [
      ['org', 'signup-org', 'Organization', slugProps(ctx.params.get('org') || ctx.org)],
      ['handle', 'signup-handle', 'Handle', { required: true, autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false' }, HANDLE_HINT],
      ['displayName', 'signup-display-name', 'Display name', { required: true, autocomplete: 'name' }],
      ['password', 'signup-password', 'Password', newPassword, PASSWORD_HINT],
    ],
    submit: async (v, ui) => {
      let user;
      try {
        user = await api.completeSignup({ token, handle: v.handle, display_name: v.displayName, password: v.password });
      } catch (error) {
        ui.error(explain(error, { token_invalid: 'This sign-up link is no longer valid. Ask for a new one.' }));
        return;
      }
      await signInAfterCreate(ctx, slug(v.org), user.email, v.password);
    },
    links: [['#/login', 'Sign in']],
  });
}

function resetScreen(ctx) {
  return authForm({
    id: 'reset-form', title: 'Reset your password', submitId: 'reset-submit', submitText: 'Send reset link',
    errorId: 'reset-error', noticeId: 'reset-notice',
    fields: [
      ['org', 'reset-org', 'Organization', slugProps(ctx.org)],
      ['email', 'reset-email', 'Email', emailProps('username')],
    ],
    submit: async (v, ui) => {
      try {
        await api.requestPasswordReset(slug(v.org), v.email);
        // Always the same answer: whether the account exists is not ours to say.
        ui.notice('If that account exists, we sent a password reset link to its address.');
      } catch (error) {
        ui.error(explain(error));
      }
    },
    links: [['#/login', 'Back to sign in']],
  });
}

function resetCompleteScreen(ctx) {
  const token = ctx.params.get('token');
  return authForm({
    id: 'reset-complete-form', title: 'Choose a new password', submitId: 'reset-complete-submit',
    submitText: 'Set password', errorId: 'reset-error',
    fields: [['password', 'reset-password', 'New password', newPassword, PASSWORD_HINT]],
    submit: async (v, ui) => {
      try {
        await api.completePasswordReset(token, v.password);
      } catch (error) {
        ui.error(explain(error, { token_invalid: 'This reset link is no longer valid. Ask for a new one.' }));
        return;
      }
      ctx.toLogin('Your password was changed. Sign in with the new one.');
    },
    links: [['#/login', 'Back to sign in']],
  });
}

function missingToken(title, text) {
  return h('section', { class: 'auth-screen', 'aria-labelledby': 'missing-token-title' },
    h('h2', { id: 'missing-token-title', text: title }),
    h('p', { class: 'error', role: 'alert', text }),
    h('ul', { class: 'auth-links' }, h('li', null, h('a', { href: '#/login', text: 'Sign in' }))));
}
