-- Channels created over the API, and DMs and group DMs that are opened idempotently: the same
-- set of people always gets the same conversation (docs/api.md, "Channels").

ALTER TABLE channels ADD COLUMN created_by BIGINT REFERENCES users (id);
-- A DM's or group DM's members as sorted, comma-separated user ids: one conversation per set.
ALTER TABLE channels ADD COLUMN dm_key TEXT;

-- Existing conversations get their key. Where several already hold the same people, one keeps
-- it — the one whose kind fits its size (a DM for two), then the one with the newest message,
-- then the oldest — and the others stay reachable by id but are never opened again.
WITH keyed AS (
    SELECT c.id, c.org_id, c.kind,
           (SELECT string_agg(m.user_id::text, ',' ORDER BY m.user_id)
            FROM channel_members m WHERE m.channel_id = c.id) AS k,
           (SELECT count(*) FROM channel_members m WHERE m.channel_id = c.id) AS size,
           (SELECT max(seq) FROM messages g WHERE g.channel_id = c.id) AS newest
    FROM channels c WHERE c.kind IN ('dm', 'group_dm')
), ranked AS (
    SELECT id, k, row_number() OVER (
               PARTITION BY org_id, k
               ORDER BY ((kind = 'dm') = (size = 2)) DESC, newest DESC NULLS LAST, id) AS n
    FROM keyed WHERE k IS NOT NULL
)
UPDATE channels c SET dm_key = ranked.k FROM ranked WHERE ranked.id = c.id AND ranked.n = 1;

CREATE UNIQUE INDEX channels_org_dm_key ON channels (org_id, dm_key) WHERE dm_key IS NOT NULL;
ALTER TABLE channels ADD CONSTRAINT channels_dm_key_kind
    CHECK (dm_key IS NULL OR kind IN ('dm', 'group_dm'));
-- The channel browser lists an org's public channels by name.
CREATE INDEX channels_org_public_name ON channels (org_id, name) WHERE kind = 'public' AND archived_at IS NULL;
