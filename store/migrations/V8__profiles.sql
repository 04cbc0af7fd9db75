-- Profiles (docs/api.md, "People"): a title, a time zone and an avatar URL, each optional and
-- set by the person themselves. The avatar becomes a file id once files exist.
ALTER TABLE users
    ADD COLUMN title      TEXT CHECK (length(title) BETWEEN 1 AND 100),
    ADD COLUMN time_zone  TEXT CHECK (time_zone ~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$' AND length(time_zone) <= 64),
    ADD COLUMN avatar_url TEXT CHECK (avatar_url ~ '^https?://[^[:space:][:cntrl:]]+$' AND length(avatar_url) <= 2048);
