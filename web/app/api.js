// api.js — the REST API of docs/api.md, one function per route. Authenticated calls carry the
// access token; a 401 refreshes the token once and retries, so an access token that expired
// while the tab slept costs one extra round trip, not a sign-out.

import { ApiError, requestBlob, requestJson } from './http.js';
import * as tokens from './tokens.js';

/** `request` is requestJson, or requestBlob for a document that is not JSON. */
async function authed(method, path, options = {}, request = requestJson) {
  const token = await tokens.accessToken();
  if (!token) throw new ApiError(401, 'auth_failed', 'You are not signed in.');
  try {
    return await request(method, path, { ...options, token });
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    // Someone else may have refreshed meanwhile: only refresh if our token is still current.
    if (tokens.currentToken() === token) await tokens.refresh();
    return request(method, path, { ...options, token: tokens.currentToken() });
  }
}

// Ids come from the server as integers; Number() keeps anything else out of the path.
const id = (value) => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new ApiError(400, 'invalid_parameter', `bad id ${value}`);
  return n;
};

// Accounts and sessions (no token).
export const login = (org, email, password) =>
  requestJson('POST', '/v1/auth/login', { body: { org, email, password } });
export const createOrg = (slug, name, owner) =>
  requestJson('POST', '/v1/orgs', { body: { slug, name, owner } });
export const acceptInvite = (body) => requestJson('POST', '/v1/invites/accept', { body });
export const requestSignup = (org, email) => requestJson('POST', '/v1/signup', { body: { org, email } });
export const completeSignup = (body) => requestJson('POST', '/v1/signup/complete', { body });
export const requestPasswordReset = (org, email) =>
  requestJson('POST', '/v1/auth/password-reset', { body: { org, email } });
export const completePasswordReset = (token, newPassword) =>
  requestJson('POST', '/v1/auth/password-reset/complete', { body: { token, new_password: newPassword } });

// With a token.
export const logout = () => authed('POST', '/v1/auth/logout');
export const me = () => authed('GET', '/v1/me');
export const listChannels = () => authed('GET', '/v1/channels');
export const listUsers = (after) => authed('GET', '/v1/users', { query: { limit: 200, after } });
/** People whose handle or display name contains `q` (owners, admins and members; guests: 403). */
export const findUsers = (q, limit = 50) => authed('GET', '/v1/users', { query: { q, limit } });
export const getUser = (user) => authed('GET', `/v1/users/${id(user)}`);
/** Changes only the fields named (`display_name`, `title`, `time_zone`, `avatar_url`; "" clears the last three). */
export const updateProfile = (changes) => authed('PATCH', '/v1/me/profile', { body: changes });

// Channels and conversations (docs/api.md, Channels and Membership).
export const createChannel = (name, kind) => authed('POST', '/v1/channels', { body: { name, kind } });
/** Opens the DM or group DM with these other people: 201 created, 200 the existing one. */
export const openConversation = (members) =>
  authed('POST', '/v1/conversations', { body: { members: members.map(id) } });
/** The org's public channels: `query` is { q, after, limit, archived }. */
export const browseChannels = (query) => authed('GET', '/v1/browse/channels', { query });
/** One channel: name, topic, purpose, archived, created_by, members (an archived one too). */
export const getChannel = (channel) => authed('GET', `/v1/channels/${id(channel)}`);
/** Renames it or sets its topic or purpose: only the fields named change ("" clears topic, purpose). */
export const updateChannel = (channel, changes) => authed('PATCH', `/v1/channels/${id(channel)}`, { body: changes });
export const archiveChannel = (channel) => authed('POST', `/v1/channels/${id(channel)}/archive`);
export const unarchiveChannel = (channel) => authed('POST', `/v1/channels/${id(channel)}/unarchive`);
/** A page of a channel's member ids: `query` is { after, limit }. */
export const channelMembers = (channel, query) => authed('GET', `/v1/channels/${id(channel)}/members`, { query });
export const addMember = (channel, user) => authed('PUT', `/v1/channels/${id(channel)}/members/${id(user)}`);
export const removeMember = (channel, user) => authed('DELETE', `/v1/channels/${id(channel)}/members/${id(user)}`);

/** A history page: `query` is { before, after, limit } (docs/api.md, history page). */
export const history = (channel, query) => authed('GET', `/v1/channels/${id(channel)}/messages`, { query });
export const search = (q, cursor) => authed('GET', '/v1/search', { query: { q, cursor } });

export const createInvite = (role, email) =>
  authed('POST', '/v1/invites', { body: email ? { role, email } : { role } });
export const setRole = (user, role) => authed('PUT', `/v1/users/${id(user)}/role`, { body: { role } });
export const deactivate = (user) => authed('POST', `/v1/users/${id(user)}/deactivate`);
export const reactivate = (user) => authed('POST', `/v1/users/${id(user)}/reactivate`);
export const setSignupDomain = (domain) => authed('PUT', '/v1/org/signup-domain', { body: { domain } });

// Integrations (docs/api.md, Integrations): owners and admins only (others: 403 forbidden).
// A bot is deactivated and reactivated like anyone (above), and added to a channel with addMember.
/** The org's bots, oldest first, each with its credentials (never their secrets). */
export const listBots = () => authed('GET', '/v1/bots');
/** Creates a bot, who joins `channels` (public or private channel ids): 201 with the bot. */
export const createBot = (handle, displayName, channels) =>
  authed('POST', '/v1/bots', { body: { handle, display_name: displayName, channels: channels.map(id) } });
/**
 * Issues a bot an API token for `channels` (each one the bot is in) and `scopes` (`post`,
 * `read`): 201 `{credential, secret, url: null}`, the only answer that holds the secret.
 */
export const issueBotToken = (bot, name, channels, scopes) =>
  authed('POST', `/v1/bots/${id(bot)}/tokens`, { body: { name, channels: channels.map(id), scopes } });
/** Creates an incoming webhook into `channel` (the bot must be in it): 201 `{credential, secret, url}`, shown only now. */
export const createWebhook = (bot, name, channel) =>
  authed('POST', `/v1/bots/${id(bot)}/webhooks`, { body: { name, channel: id(channel) } });
/** Revokes a bot's token or webhook: 200 with the credential, `revoked: true` (also when it already was). */
export const revokeCredential = (bot, credential) =>
  authed('DELETE', `/v1/bots/${id(bot)}/credentials/${id(credential)}`);

/** An audit page: `query` is { action, actor, target, since, until, before, limit } (docs/api.md). */
export const audit = (query) => authed('GET', '/v1/audit', { query });

// Data rights (docs/api.md, Data rights): exports and erasure run as jobs (202 with the job).
export const exportMine = () => authed('POST', '/v1/me/export');
/** Owners only. */
export const exportOrg = () => authed('POST', '/v1/org/export');
/** Owners only, never on themselves: deactivates the person at once and erases them in a job. */
export const eraseUser = (user) => authed('POST', `/v1/users/${id(user)}/erase`);
/** A job: `state` queued | running | done | failed, `error`, `summary` (an erasure's). */
export const job = (jobId) => authed('GET', `/v1/jobs/${id(jobId)}`);
/** A finished export's document, as a Blob (409 not_ready before, 410 expired after 7 days). */
export const jobArchive = (jobId) => authed('GET', `/v1/jobs/${id(jobId)}/archive`, {}, requestBlob);
/** `{"messages":"anonymise"|"delete"}` (owners and admins). */
export const erasurePolicy = () => authed('GET', '/v1/org/erasure-policy');
/** Owners only. */
export const setErasurePolicy = (messages) => authed('PUT', '/v1/org/erasure-policy', { body: { messages } });
