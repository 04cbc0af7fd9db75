-- The audit log (docs/accounts.md, "Audit log"): an append-only record of security and admin
-- actions, per org. Rows are never updated (a trigger refuses it); they are deleted only by
-- retention, oldest first.

CREATE TABLE audit_events (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id             BIGINT NOT NULL REFERENCES orgs (id),
    at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Who did it; NULL when nobody signed in did (a failed login, a sign-up).
    actor_id           BIGINT REFERENCES users (id),
    action             TEXT NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target_user_id     BIGINT REFERENCES users (id),
    target_channel_id  BIGINT REFERENCES channels (id),
    ip                 INET,
    detail             JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_org ON audit_events (org_id, id DESC);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
