-- Bots and their credentials (docs/api.md, "Integrations"): a bot is a user of the org with the
-- role `bot` — no email, no password, never a WebSocket session — that posts and reads through
-- credentials an admin issues: API tokens, and incoming webhooks (a secret URL for one channel).

ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('owner', 'admin', 'member', 'guest', 'bot'));

-- A credential is stored as the SHA-256 of its secret; the secret is shown once, at creation.
-- channels: where it may act (each must also be a channel the bot is a member of, checked on
-- use). A webhook posts to exactly one channel and reads nothing.
CREATE TABLE bot_credentials (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES orgs (id),
    bot_id      BIGINT NOT NULL REFERENCES users (id),
    kind        TEXT NOT NULL CHECK (kind IN ('token', 'webhook')),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    hash        BYTEA NOT NULL UNIQUE,
    channels    BIGINT[] NOT NULL CHECK (cardinality(channels) BETWEEN 1 AND 100),
    can_post    BOOLEAN NOT NULL,
    can_read    BOOLEAN NOT NULL,
    created_by  BIGINT NOT NULL REFERENCES users (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ,
    CHECK (can_post OR can_read),
    CHECK (kind = 'token' OR (cardinality(channels) = 1 AND can_post AND NOT can_read))
);
CREATE INDEX bot_credentials_bot ON bot_credentials (bot_id);
