-- Accounts, sessions and the directory-event outbox (docs/accounts.md).

-- dir_version: the org's directory version. Every directory change (membership, role,
-- deactivation, session revocation) takes the org row's lock, bumps it and records the change in
-- directory_events in the same transaction, so versions are gap-free and in commit order.
-- signup_domain: when set, people with a verified address at this domain may sign up as members.
ALTER TABLE orgs
    ADD COLUMN dir_version   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN signup_domain TEXT CHECK (signup_domain ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$');

-- email: the login name within an org (stored lower-case).
-- tokens_not_before: access tokens issued before it are refused ("sign out everywhere",
-- password change and reset, deactivation), including operator-minted ones without a session.
ALTER TABLE users
    ADD COLUMN email             TEXT CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    ADD COLUMN tokens_not_before TIMESTAMPTZ;
CREATE UNIQUE INDEX users_org_email ON users (org_id, email) WHERE email IS NOT NULL;

-- A login session: one refresh-token family. Access tokens carry its id (`sid`).
CREATE TABLE auth_sessions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    revoked_reason  TEXT CHECK (revoked_reason IN ('logout', 'sign_out_everywhere', 'refresh_reused',
                                                   'password_changed', 'password_reset', 'deactivated', 'admin'))
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens, stored as SHA-256 of the secret. A token is used once: refreshing marks it
-- rotated and issues its successor; within the grace window one more use gets one more
-- successor (a second tab); any other use of a rotated token revokes its whole session (family).
CREATE TABLE refresh_tokens (
    hash        BYTEA PRIMARY KEY,
    session_id  BIGINT NOT NULL REFERENCES auth_sessions (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    rotated_at  TIMESTAMPTZ,
    -- Set when a rotated token got a second successor within the grace window: any further
    -- use is reuse.
    reissued_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Single-use tokens sent by link or mail: invites, password resets, sign-up verifications.
-- Stored as SHA-256 of the secret.
CREATE TABLE account_tokens (
    hash        BYTEA PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('invite', 'password_reset', 'signup')),
    org_id      BIGINT NOT NULL REFERENCES orgs (id),
    -- invite and signup: the role the new account gets; password_reset: null.
    role        TEXT CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    -- invite: the address it was sent to (optional); signup: the address being verified.
    email       TEXT,
    -- password_reset: whose password.
    user_id     BIGINT REFERENCES users (id),
    created_by  BIGINT REFERENCES users (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

-- The directory-event outbox: every directory change, in version order per org. The api
-- service publishes each to the MESSAGES stream (subject dir.<partition>.<org>) in version
-- order and stamps published_at; a sweeper publishes what a crash left behind.
CREATE TABLE directory_events (
    org_id        BIGINT NOT NULL REFERENCES orgs (id),
    version       BIGINT NOT NULL CHECK (version > 0),
    change        JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ,
    stream_seq    BIGINT,
    PRIMARY KEY (org_id, version)
);
CREATE INDEX directory_events_unpublished ON directory_events (org_id) WHERE published_at IS NULL;
