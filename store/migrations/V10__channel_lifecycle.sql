-- Channel lifecycle (docs/api.md, "Channels"): a named channel's topic and purpose, set with its
-- rename and archive through `PATCH /v1/channels/{channel}` and the archive routes. '' is none.

ALTER TABLE channels
    ADD COLUMN topic   TEXT NOT NULL DEFAULT '' CHECK (length(topic) <= 250),
    ADD COLUMN purpose TEXT NOT NULL DEFAULT '' CHECK (length(purpose) <= 250);

-- The browser of archived public channels (`?archived=true`).
CREATE INDEX channels_org_archived_public_name ON channels (org_id, name)
    WHERE kind = 'public' AND archived_at IS NOT NULL;
