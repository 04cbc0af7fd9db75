-- Data rights (docs/api.md, "Data rights"): exports and erasures run as background jobs; an
-- org chooses what erasure does to a person's messages; an erased user keeps their id (others'
-- history refers to it) and nothing else.

ALTER TABLE orgs
    ADD COLUMN erasure_policy TEXT NOT NULL DEFAULT 'anonymise'
        CHECK (erasure_policy IN ('anonymise', 'delete'));

ALTER TABLE users ADD COLUMN erased_at TIMESTAMPTZ;
-- `erased-<id>` is what an erased account's handle becomes: nobody else may take it (which
-- would make the erasure's scrub fail). NOT VALID: handles from before are not re-checked.
ALTER TABLE users ADD CONSTRAINT users_erased_handle
    CHECK (handle NOT LIKE 'erased-%' OR erased_at IS NOT NULL) NOT VALID;

CREATE TABLE data_jobs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id        BIGINT NOT NULL REFERENCES orgs (id),
    kind          TEXT NOT NULL CHECK (kind IN ('export_user', 'export_org', 'erase_user')),
    -- Whose data: the user of export_user and erase_user; NULL for export_org.
    subject_id    BIGINT REFERENCES users (id),
    requested_by  BIGINT NOT NULL REFERENCES users (id),
    state         TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    -- A running job whose lease has passed is taken up again: its worker died.
    lease_until   TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    -- Why a failed job failed, in words (never personal data).
    error         TEXT,
    -- An export's JSON document, until `expires_at`.
    archive       BYTEA,
    archive_bytes BIGINT,
    expires_at    TIMESTAMPTZ,
    -- What an erasure did, per kind of data (counts, never personal data).
    summary       JSONB,
    -- An erasure's finds in the stream that later kinds need if it is retried (seqs of the
    -- person's messages; the stream's copies are gone by then).
    found_seqs    BIGINT[] NOT NULL DEFAULT '{}',
    CHECK ((kind = 'export_org') = (subject_id IS NULL))
);
CREATE INDEX data_jobs_open ON data_jobs (id) WHERE state IN ('queued', 'running');
CREATE INDEX data_jobs_expiring ON data_jobs (expires_at) WHERE archive IS NOT NULL;
-- One erasure of a person at a time.
CREATE UNIQUE INDEX data_jobs_one_erasure ON data_jobs (subject_id)
    WHERE kind = 'erase_user' AND state IN ('queued', 'running');

-- The audit log stays append-only, with one exception: inside a transaction that sets
-- `threadspace.erasure` (an erasure), an update may clear a record's address and replace the
-- `email` of its detail by "erased" — nothing else. Like the trigger itself, this guards against
-- mistakes in the service, not against someone who owns the table.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('threadspace.erasure', true) = 'on'
       AND NEW.id = OLD.id AND NEW.org_id = OLD.org_id AND NEW.at = OLD.at
       AND NEW.actor_id IS NOT DISTINCT FROM OLD.actor_id AND NEW.action = OLD.action
       AND NEW.target_user_id IS NOT DISTINCT FROM OLD.target_user_id
       AND NEW.target_channel_id IS NOT DISTINCT FROM OLD.target_channel_id
       AND (NEW.ip IS NULL OR NEW.ip = OLD.ip)
       AND (NEW.detail = OLD.detail
            OR (OLD.detail ? 'email' AND NEW.detail = jsonb_set(OLD.detail, '{email}', '"erased"'))) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
