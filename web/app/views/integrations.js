// views/integrations.js — the "Integrations" section of #/admin (docs/api.md, Integrations):
// the org's bots (GET /v1/bots) with their API tokens and incoming webhooks; a "New bot" form;
// per bot "New token", "New webhook", "Add to channel" and Deactivate / Reactivate; revoking,
// after a confirmation. A secret (and a webhook's URL) is shown once, in a dialog, and cleared
// when that dialog closes: it is never stored, logged or kept anywhere else. Bot names, handles
// and credential names are text like any other (dom.js). The client does not know a bot's
// channels, so the choices are the caller's own channels; the server refuses one the bot is
// not in, and its message is shown.

import * as api from '../api.js';
import { field, h, setMessage, srOnly } from '../dom.js';
import { formatDateTime, isoTime } from '../format.js';
import { Dialog, cancelButton } from './dialog.js';

const KIND_LABEL = { token: 'API token', webhook: 'Incoming webhook' };
const COPY_NOW = 'Copy it now: it will not be shown again.';

export class Integrations {
  /** `onChanged({ people })`: an action here succeeded (audited; with `people`, the directory changed). */
  constructor({ store, onChanged }) {
    this.store = store;
    this.onChanged = onChanged;
    this.refs = null; // the section's elements, built again by each render()
    this.run = 0; // the newest load: an older answer is void
    this.tokenDialog = this.issueDialog('token', 'Issue token');
    this.webhookDialog = this.issueDialog('webhook', 'Create webhook');
    this.secretDialog = this.buildSecretDialog();
    this.revokeDialog = this.buildRevokeDialog();
  }

  /** The modal dialogs this section owns (they go into the page, after main). */
  get dialogs() {
    return [this.tokenDialog, this.webhookDialog, this.secretDialog, this.revokeDialog].map((d) => d.dialog.el);
  }

  /** Closes them (the app is going away): a secret on show is wiped at once. */
  closeDialogs() {
    this.secretDialog.clear();
    for (const d of [this.tokenDialog, this.webhookDialog, this.secretDialog, this.revokeDialog]) {
      d.dialog.close({ restoreFocus: false });
    }
  }

  /** Builds the section and loads the bots; returns the section. */
  render() {
    const heading = h('h3', { id: 'integrations-heading', tabindex: '-1', text: 'Integrations' });
    this.refs = {
      heading,
      status: h('p', { id: 'integrations-status', class: 'admin-status', role: 'status' }),
      error: h('p', { id: 'integrations-error', class: 'error', role: 'alert', hidden: true }),
      list: h('ul', { id: 'bots', class: 'bots', 'aria-label': 'Bots' }),
      empty: h('p', { class: 'bots-empty', hidden: true }),
    };
    const { status, error, list, empty } = this.refs;
    const section = h('section', { id: 'integrations', class: 'admin-card', 'aria-labelledby': 'integrations-heading' },
      heading,
      h('p', { class: 'field-hint', text: 'Bots post and read through API tokens and incoming webhooks. Each secret is shown once, when it is issued.' }),
      status, error, list, empty, this.newBotForm());
    this.load();
    return section;
  }

  say(text) {
    if (!this.refs) return;
    setMessage(this.refs.error, '');
    this.refs.status.textContent = text;
  }

  fail(text) {
    if (!this.refs) return;
    this.refs.status.textContent = '';
    setMessage(this.refs.error, text);
  }

  /**
   * Loads the bots and lists them. Focus on a control of the list moves to the same control of
   * the new list; `focus` ({ bot, selector }) names another one (used when focus was lost).
   */
  async load(focus = null) {
    const refs = this.refs;
    if (!refs) return;
    const run = ++this.run;
    refs.list.setAttribute('aria-busy', 'true');
    let answer = null;
    try {
      answer = await api.listBots();
    } catch (error) {
      if (run !== this.run || refs !== this.refs) return;
      refs.list.removeAttribute('aria-busy');
      this.fail(`Could not load the bots: ${error.message}`);
      return;
    }
    if (run !== this.run || refs !== this.refs) return;
    const bots = (Array.isArray(answer?.bots) ? answer.bots : []).filter((bot) => Number.isSafeInteger(bot?.id));
    const active = document.activeElement;
    const inList = active && refs.list.contains(active) ? active : null;
    const lost = focusLost();
    const target = focus ?? (inList ? focusTarget(inList) : null);
    refs.list.replaceChildren(...bots.map((bot) => this.botItem(bot)));
    refs.list.removeAttribute('aria-busy');
    setMessage(refs.empty, bots.length ? '' : 'No bots yet.');
    if (target && (inList || lost)) this.focusIn(target.bot, target.selector);
  }

  /** Focuses `selector` in the bot's entry (else its heading, else the section's). */
  focusIn(botId, selector) {
    const li = this.refs?.list.querySelector(`li.bot[data-user="${CSS.escape(String(botId))}"]`);
    const control = li?.querySelector(selector);
    const fallback = li?.querySelector('.bot-heading') ?? this.refs?.heading;
    (control && !control.disabled ? control : fallback)?.focus();
  }

  /** Like focusIn, but only when focus was lost (the control used was replaced). */
  restore(botId, selector) {
    if (focusLost()) this.focusIn(botId, selector);
  }

  // ---- channels ----

  /** The caller's public and private channels (bots join neither DMs nor group DMs). */
  channelChoices() {
    return this.store.listedChannels().filter((ch) => (ch.kind === 'public' || ch.kind === 'private') && ch.name);
  }

  /** "#general", "secret (private)", or "#<id>" for a channel this client does not know. */
  channelName(id) {
    const ch = this.store.channel(id);
    if (ch?.kind === 'public' && ch.name) return `#${ch.name}`;
    if (ch?.kind === 'private' && ch.name) return `${ch.name} (private)`;
    return `#${id}`;
  }

  /** A fieldset of one checkbox per channel: `fieldset#<id>`, boxes `#<id>-<channel>` valued by id. */
  channelChecks(id, legend, hint) {
    const channels = this.channelChoices();
    const boxes = channels.map((ch) => check(h('input', { id: `${id}-${ch.id}`, type: 'checkbox', value: ch.id }), this.channelName(ch.id)));
    return h('fieldset', { id, class: 'checks', 'aria-describedby': `${id}-hint` },
      h('legend', { text: legend }),
      h('p', { id: `${id}-hint`, class: 'field-hint', text: channels.length ? hint : 'You are in no channels.' }),
      channels.length ? h('div', { class: 'checks-list' }, boxes) : null);
  }

  // ---- the list ----

  botItem(bot) {
    const name = String(bot.display_name ?? '');
    const credentials = (Array.isArray(bot.credentials) ? bot.credentials : []).filter((c) => Number.isSafeInteger(c?.id));
    const action = bot.deactivated ? 'reactivate' : 'deactivate';
    const activation = h('button', { type: 'button', class: `bot-activation bot-${action}` },
      bot.deactivated ? 'Reactivate' : 'Deactivate', srOnly(` ${name}`));
    activation.addEventListener('click', () => this.setActive(bot, action, activation));
    const newToken = h('button', { type: 'button', class: 'bot-new-token' }, 'New token', srOnly(` for ${name}`));
    newToken.addEventListener('click', () => this.openIssue(this.tokenDialog, bot, newToken));
    const newWebhook = h('button', { type: 'button', class: 'bot-new-webhook' }, 'New webhook', srOnly(` for ${name}`));
    newWebhook.addEventListener('click', () => this.openIssue(this.webhookDialog, bot, newWebhook));
    return h('li', { class: bot.deactivated ? 'bot deactivated' : 'bot', dataset: { user: bot.id } },
      h('div', { class: 'bot-header' },
        h('h4', { class: 'bot-heading', tabindex: '-1' },
          h('span', { class: 'bot-name', text: name }),
          h('span', { class: 'bot-handle', text: ` @${bot.handle ?? ''}` }),
          bot.deactivated ? h('span', { class: 'bot-deactivated', text: 'deactivated' }) : null),
        activation),
      credentials.length
        ? h('ul', { class: 'credentials', 'aria-label': `Tokens and webhooks of ${name}` },
          credentials.map((credential) => this.credentialItem(bot, credential)))
        : h('p', { class: 'bot-empty', text: 'No tokens or webhooks yet.' }),
      h('div', { class: 'bot-actions' }, newToken, newWebhook, this.addChannelControl(bot)));
  }

  credentialItem(bot, credential) {
    const name = String(credential.name ?? '');
    const scopes = (Array.isArray(credential.scopes) ? credential.scopes : []).filter((s) => typeof s === 'string');
    const channels = (Array.isArray(credential.channels) ? credential.channels : []).filter(Number.isSafeInteger);
    const at = Number.isFinite(credential.created_at) ? credential.created_at * 1000 : null;
    let end;
    if (credential.revoked) {
      end = h('span', { class: 'credential-revoked', text: 'revoked' });
    } else {
      end = h('button', { type: 'button', class: 'credential-revoke' }, 'Revoke', srOnly(` ${name}`));
      end.addEventListener('click', () => this.askRevoke(bot, credential, end));
    }
    const kind = typeof credential.kind === 'string' ? credential.kind : null;
    const info = h('div', { class: 'credential-info' },
      h('span', { class: 'credential-name', text: name }),
      h('p', { class: 'credential-meta' },
        h('span', { class: 'credential-kind', text: Object.hasOwn(KIND_LABEL, kind) ? KIND_LABEL[kind] : kind ?? '' }),
        ' · scopes: ', h('span', { class: 'credential-scopes', text: scopes.join(', ') }),
        ' · in ', h('span', { class: 'credential-channels', text: channels.map((id) => this.channelName(id)).join(', ') }),
        at !== null ? [' · issued ', h('time', { class: 'credential-created', datetime: isoTime(at), text: formatDateTime(at) })] : null,
        Number.isSafeInteger(credential.created_by) ? ` by ${this.store.displayName(credential.created_by)}` : null));
    return h('li', { class: credential.revoked ? 'credential revoked' : 'credential', dataset: { credential: credential.id, kind } },
      info, end);
  }

  addChannelControl(bot) {
    const channels = this.channelChoices();
    if (!channels.length) return null;
    const id = `bot-${bot.id}-channel`;
    const select = h('select', { id, class: 'bot-add-channel' },
      channels.map((ch) => h('option', { value: ch.id, text: this.channelName(ch.id) })));
    const add = h('button', { type: 'button', class: 'bot-add' }, 'Add to channel');
    add.addEventListener('click', () => this.addToChannel(bot, Number(select.value), add));
    return h('div', { class: 'bot-add-row' },
      h('label', { for: id, class: 'visually-hidden', text: `Channel to add ${bot.display_name} to` }), select, add);
  }

  // ---- actions on a bot ----

  async setActive(bot, action, button) {
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    try {
      await (action === 'deactivate' ? api.deactivate(bot.id) : api.reactivate(bot.id));
      this.say(action === 'deactivate'
        ? `${bot.display_name} was deactivated: its tokens and webhooks are refused until it is reactivated.`
        : `${bot.display_name} was reactivated.`);
      this.onChanged({ people: true });
    } catch (error) {
      this.fail(`Could not ${action} ${bot.display_name}: ${error.message}`);
    }
    button.removeAttribute('aria-disabled');
    // Deactivate turns into Reactivate: the new button, whichever it is.
    await this.load({ bot: bot.id, selector: '.bot-activation' });
  }

  async addToChannel(bot, channelId, button) {
    if (button.getAttribute('aria-disabled') === 'true' || !Number.isSafeInteger(channelId)) return;
    const where = this.channelName(channelId);
    button.setAttribute('aria-disabled', 'true');
    try {
      const answer = await api.addMember(channelId, bot.id);
      this.say(answer?.changed === false ? `${bot.display_name} is already in ${where}.` : `${bot.display_name} was added to ${where}.`);
      this.onChanged({});
    } catch (error) {
      this.fail(`Could not add ${bot.display_name} to ${where}: ${error.message}`);
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  // ---- a new bot ----

  newBotForm() {
    const handle = field('bot-handle', 'Handle', {
      type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', placeholder: 'e.g. deploy-bot',
    }, 'Lower-case letters a–z, digits 0–9, ., _ and -; up to 63 characters, unique in the org.');
    const display = field('bot-display-name', 'Display name', { type: 'text', autocomplete: 'off', placeholder: 'e.g. Deploy bot' });
    const channels = this.channelChecks('bot-channels', 'Channels it joins', 'Your channels; add it to more later.');
    const error = h('p', { id: 'bot-error', class: 'error', role: 'alert', hidden: true });
    const create = h('button', { id: 'bot-create', type: 'submit', class: 'primary', text: 'Create bot' });
    const form = h('form', { id: 'bot-form', class: 'bot-form', novalidate: true, 'aria-labelledby': 'bot-form-heading' },
      h('h4', { id: 'bot-form-heading', text: 'New bot' }), handle.el, display.el, channels, error, create);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (create.getAttribute('aria-disabled') === 'true') return;
      const values = { handle: handle.input.value.trim(), name: display.input.value.trim() };
      if (!values.handle || !values.name) {
        setMessage(error, values.handle ? 'Give the bot a display name.' : 'Give the bot a handle.');
        (values.handle ? display.input : handle.input).focus();
        return;
      }
      create.setAttribute('aria-disabled', 'true');
      create.textContent = 'Creating…';
      try {
        const bot = await api.createBot(values.handle, values.name, checkedValues(channels).map(Number));
        form.reset();
        setMessage(error, '');
        this.say(`${bot.display_name} (@${bot.handle}) was created. Issue it a token or a webhook.`);
        this.onChanged({ people: true });
        await this.load();
        // The next step: a token or a webhook for it.
        this.focusIn(bot.id, '.bot-new-token');
      } catch (failure) {
        setMessage(error, `Could not create the bot: ${failure.message}`);
        handle.input.focus();
      } finally {
        create.removeAttribute('aria-disabled');
        create.textContent = 'Create bot';
      }
    });
    return form;
  }

  // ---- issuing a token or a webhook ----

  /** The "New token" (`kind` token) or "New webhook" dialog. */
  issueDialog(kind, submitText) {
    const d = { kind, submitText, bot: null, busy: false };
    d.dialog = new Dialog({ id: `${kind}-dialog`, labelledBy: `${kind}-heading` });
    d.heading = h('h2', { id: `${kind}-heading` });
    d.name = field(`${kind}-name`, 'Name', { type: 'text', autocomplete: 'off' },
      kind === 'token' ? 'What it is for, e.g. CI pipeline (up to 80 characters).' : 'What it is for, e.g. Alertmanager (up to 80 characters).');
    d.error = h('p', { id: `${kind}-error`, class: 'error', role: 'alert', hidden: true });
    d.name.input.setAttribute('aria-describedby', `${kind}-name-hint ${kind}-error`);
    d.submit = h('button', { id: `${kind}-create`, type: 'submit', class: 'primary', text: submitText });
    d.choices = h('div'); // the channel choice, built again at each opening
    let scopes = null;
    if (kind === 'token') {
      d.post = h('input', { id: 'token-scope-post', type: 'checkbox', value: 'post' });
      d.read = h('input', { id: 'token-scope-read', type: 'checkbox', value: 'read' });
      scopes = h('fieldset', { id: 'token-scopes', class: 'checks' }, h('legend', { text: 'It may' }),
        check(d.post, 'Post messages (post)'), check(d.read, 'Read history (read)'));
    }
    d.form = h('form', { id: `${kind}-form`, class: 'dialog-form', novalidate: true },
      d.heading, d.name.el, d.choices, scopes, d.error,
      h('div', { class: 'dialog-actions' }, cancelButton(d.dialog), d.submit));
    d.dialog.body.append(d.form);
    d.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.issue(d);
    });
    return d;
  }

  openIssue(d, bot, opener) {
    d.bot = bot;
    d.heading.textContent = `${d.kind === 'token' ? 'New API token' : 'New incoming webhook'} for ${bot.display_name}`;
    d.name.input.value = '';
    setMessage(d.error, '');
    if (d.kind === 'token') {
      d.choices.replaceChildren(this.channelChecks('token-channels', 'Channels', `It acts only in these; ${bot.display_name} must be a member of each.`));
      d.post.checked = true;
      d.read.checked = false;
    } else {
      const channel = field('webhook-channel', 'Channel', { tag: 'select' }, `It posts here; ${bot.display_name} must be a member.`);
      for (const ch of this.channelChoices()) channel.input.append(h('option', { value: ch.id, text: this.channelName(ch.id) }));
      d.channel = channel.input;
      d.choices.replaceChildren(channel.el);
    }
    d.dialog.open(opener, d.name.input);
  }

  async issue(d) {
    if (d.busy || !d.bot) return;
    const bot = d.bot;
    const name = d.name.input.value.trim();
    let request;
    let problem = name ? null : 'Give it a name.';
    if (d.kind === 'token') {
      const channels = checkedValues(d.choices).map(Number);
      const scopes = [d.post, d.read].filter((box) => box.checked).map((box) => box.value);
      problem ??= !channels.length ? 'Choose at least one channel.' : !scopes.length ? 'Choose what it may do: post, read or both.' : null;
      request = () => api.issueBotToken(bot.id, name, channels, scopes);
    } else {
      const channel = Number(d.channel?.value);
      problem ??= Number.isSafeInteger(channel) && channel > 0 ? null : 'Choose a channel.';
      request = () => api.createWebhook(bot.id, name, channel);
    }
    if (problem) {
      setMessage(d.error, problem);
      d.name.input.focus();
      return;
    }
    d.busy = true;
    d.submit.setAttribute('aria-disabled', 'true');
    d.submit.textContent = 'Issuing…';
    try {
      const answer = await request();
      const opener = d.dialog.opener;
      d.dialog.close({ restoreFocus: false });
      this.showSecret(bot, d.kind, answer, opener);
      this.say(`${d.kind === 'token' ? 'API token' : 'Webhook'} “${name}” issued for ${bot.display_name}.`);
      this.onChanged({});
      this.load();
    } catch (error) {
      setMessage(d.error, `Could not ${d.kind === 'token' ? 'issue the token' : 'create the webhook'}: ${error.message}`);
      d.name.input.focus();
    } finally {
      d.busy = false;
      d.submit.removeAttribute('aria-disabled');
      d.submit.textContent = d.submitText;
    }
  }

  // ---- the secret, shown once ----

  buildSecretDialog() {
    const d = { restore: null };
    // A click beside it does not close it: the secret would be gone for good.
    d.dialog = new Dialog({ id: 'credential-dialog', labelledBy: 'credential-heading', className: 'dialog-wide', closeOnBackdrop: false });
    d.heading = h('h2', { id: 'credential-heading' });
    const copyText = (input, what) => {
      const button = h('button', { type: 'button', id: `${input.id}-copy` }, 'Copy', srOnly(` ${what}`));
      button.addEventListener('click', () => this.copy(input, what));
      return button;
    };
    const secretInput = (id) => h('input', { id, type: 'text', readOnly: true, autocomplete: 'off', spellcheck: 'false', class: 'secret-value' });
    d.url = secretInput('credential-url');
    d.secret = secretInput('credential-secret');
    d.secretLabel = h('label', { for: 'credential-secret' });
    d.urlRow = h('div', { class: 'secret-field' },
      h('label', { for: 'credential-url', text: 'Webhook URL' }), h('div', { class: 'inline-row' }, d.url, copyText(d.url, 'the URL')));
    d.hint = h('p', { id: 'credential-hint', class: 'field-hint' });
    d.status = h('p', { id: 'credential-status', class: 'credential-status', role: 'status' });
    const done = h('button', { id: 'credential-done', type: 'button', class: 'primary', text: 'Done' });
    done.addEventListener('click', () => {
      clear();
      d.dialog.close();
    });
    d.dialog.body.append(h('div', { class: 'dialog-form' },
      d.heading,
      h('p', { id: 'credential-warning', class: 'credential-warning', text: COPY_NOW }),
      d.urlRow,
      h('div', { class: 'secret-field' }, d.secretLabel, h('div', { class: 'inline-row' }, d.secret, copyText(d.secret, 'the secret'))),
      d.hint, d.status,
      h('div', { class: 'dialog-actions' }, done)));
    d.dialog.el.setAttribute('aria-describedby', 'credential-warning');
    const clear = () => {
      d.secret.value = '';
      d.url.value = '';
      d.status.textContent = '';
    };
    d.clear = clear;
    d.dialog.onClose = () => {
      // The `close` event comes a moment after close(): the dialog may show the next secret already.
      if (d.dialog.isOpen) return;
      clear();
      const target = d.restore;
      d.restore = null;
      // Its opener was replaced when the list reloaded behind the dialog: the new one.
      if (target) this.restore(target.bot, target.selector);
    };
    return d;
  }

  showSecret(bot, kind, answer, opener) {
    const d = this.secretDialog;
    const webhook = kind === 'webhook';
    d.heading.textContent = `${webhook ? 'Webhook created' : 'API token issued'} for ${bot.display_name}`;
    d.secretLabel.textContent = webhook ? 'Webhook secret (part of the URL)' : 'API token';
    d.secret.value = typeof answer?.secret === 'string' ? answer.secret : '';
    d.url.value = webhook && typeof answer?.url === 'string' ? answer.url : '';
    d.urlRow.hidden = !webhook;
    d.hint.textContent = webhook
      ? 'Anyone with this URL can post into its channel as the bot: POST JSON such as {"text": "Deploy finished"} to it.'
      : 'Send it as "Authorization: Bearer <token>" to POST or GET /v1/channels/{channel}/messages.';
    d.status.textContent = '';
    d.restore = { bot: bot.id, selector: webhook ? '.bot-new-webhook' : '.bot-new-token' };
    const first = webhook ? d.url : d.secret;
    if (d.dialog.open(opener, first)) first.select();
  }

  async copy(input, what) {
    const status = this.secretDialog.status;
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = `Copied ${what}.`;
    } catch {
      input.focus();
      input.select();
      status.textContent = 'Press Ctrl+C (or ⌘C) to copy the selected text.';
    }
  }

  // ---- revoking ----

  buildRevokeDialog() {
    const d = { target: null };
    d.dialog = new Dialog({ id: 'revoke-dialog', labelledBy: 'revoke-heading' });
    d.heading = h('h2', { id: 'revoke-heading' });
    d.text = h('p', { id: 'revoke-text' });
    const confirm = h('button', { id: 'revoke-confirm', type: 'submit', class: 'primary danger', text: 'Revoke' });
    d.cancel = cancelButton(d.dialog);
    const form = h('form', { id: 'revoke-form', class: 'dialog-form', novalidate: true },
      d.heading, d.text, h('div', { class: 'dialog-actions' }, d.cancel, confirm));
    d.dialog.body.append(form);
    d.dialog.el.setAttribute('aria-describedby', 'revoke-text');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const target = d.target;
      d.target = null;
      d.dialog.close({ restoreFocus: false });
      if (target) this.revoke(target.bot, target.credential);
    });
    return d;
  }

  askRevoke(bot, credential, button) {
    const d = this.revokeDialog;
    const what = credential.kind === 'webhook' ? 'webhook' : 'token';
    d.target = { bot, credential };
    d.heading.textContent = `Revoke the ${what} “${credential.name}”?`;
    d.text.textContent = `Whatever uses it is refused as ${bot.display_name} from its next request on. This cannot be undone: issue a new ${what} instead.`;
    // Focus on Cancel: Enter on a focused dialog should not be the irreversible choice.
    d.dialog.open(button, d.cancel);
  }

  async revoke(bot, credential) {
    try {
      await api.revokeCredential(bot.id, credential.id);
      this.say(`“${credential.name}” of ${bot.display_name} was revoked.`);
      this.onChanged({});
    } catch (error) {
      this.fail(`Could not revoke “${credential.name}”: ${error.message}`);
    }
    // Its Revoke button is gone once revoked: the bot's heading then.
    await this.load({ bot: bot.id, selector: `.credential[data-credential="${CSS.escape(String(credential.id))}"] .credential-revoke` });
  }
}

/** A labelled checkbox: <div class="check"><input> <label></div>. */
function check(box, label) {
  return h('div', { class: 'check' }, box, h('label', { for: box.id, text: label }));
}

function checkedValues(container) {
  return [...container.querySelectorAll('input[type="checkbox"]:checked')].map((box) => box.value);
}

/** Focus is nowhere useful: on the body, on a removed element, or in a dialog that closed. */
function focusLost() {
  const active = document.activeElement;
  return !active || active === document.body || !active.isConnected || Boolean(active.closest('dialog:not([open])'));
}

/** Where focus was in the list: its bot and a selector for the same control in a new list. */
function focusTarget(el) {
  const bot = Number(el.closest('li.bot')?.dataset.user);
  const credential = el.closest('li.credential');
  let selector = el.classList[0] ? `.${CSS.escape(el.classList[0])}` : '.bot-heading';
  if (credential) selector = `.credential[data-credential="${CSS.escape(credential.dataset.credential)}"] ${selector}`;
  return { bot, selector };
}
