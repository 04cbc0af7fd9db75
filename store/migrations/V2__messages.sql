-- Messages: the seven-year system of record the broker-bridge writes from JetStream, and
-- their full-text search index, written by the bridge's separate indexer consumers.
--
-- Both tables are partitioned by RANGE (seq) with the same bounds: seq is the JetStream
-- stream sequence, so the primary key (seq) is global and makes a re-insert a no-op
-- (ON CONFLICT DO NOTHING), history pages (channel_id, seq) walk partitions in order, and
-- retention drops whole partitions once the newest message in them is older than the
-- retention period. Partitions are created ahead of the writers by
-- `store::messages::ensure_partitions`, recorded in `message_partitions`.
--
-- The search index is a table of its own because computing a tsvector and inserting it into
-- a GIN index costs ~5x the rest of the row: the archive writer stays fast, and search
-- trails it by one batch.

CREATE TABLE messages (
    seq            BIGINT NOT NULL CHECK (seq > 0),
    org_id         BIGINT NOT NULL CHECK (org_id > 0),
    channel_id     BIGINT NOT NULL CHECK (channel_id > 0),
    sender_id      BIGINT NOT NULL CHECK (sender_id > 0),
    client_msg_id  TEXT NOT NULL CHECK (octet_length(client_msg_id) BETWEEN 1 AND 64),
    body           TEXT NOT NULL CHECK (octet_length(body) <= 65536),
    -- Gateway time at publish (the `ts` of the live frame).
    sent_at        TIMESTAMPTZ NOT NULL,
    -- JetStream's stored time: retention and bridge lag are measured from it.
    stored_at      TIMESTAMPTZ NOT NULL,
    written_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (seq)
) PARTITION BY RANGE (seq);

-- History pages: WHERE channel_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT n.
CREATE INDEX messages_channel_seq ON messages (channel_id, seq);

CREATE TABLE message_search (
    seq         BIGINT NOT NULL CHECK (seq > 0),
    org_id      BIGINT NOT NULL,
    channel_id  BIGINT NOT NULL,
    body_tsv    TSVECTOR NOT NULL,
    PRIMARY KEY (seq)
) PARTITION BY RANGE (seq);

-- Search: body_tsv @@ websearch_to_tsquery('english', $q), then org and channel filters.
CREATE INDEX message_search_body ON message_search USING GIN (body_tsv);

-- One row per partition range (a `messages_<from>` and a `message_search_<from>` table),
-- maintained in the same transaction as their DDL.
CREATE TABLE message_partitions (
    name        TEXT PRIMARY KEY,
    seq_from    BIGINT NOT NULL UNIQUE,
    seq_to      BIGINT NOT NULL CHECK (seq_to > seq_from),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The bridge's progress per stream partition. Every batch upserts its row, so every batch
-- commit is a real write that waits for WAL flush (and the synchronous standby): a commit
-- that succeeds proves that every earlier commit, including one whose outcome was unknown,
-- is durable too.
CREATE TABLE bridge_checkpoints (
    -- `archive` (messages) or `search` (message_search).
    sink              TEXT NOT NULL CHECK (sink IN ('archive', 'search')),
    stream_partition  INTEGER NOT NULL CHECK (stream_partition >= 0),
    -- Highest seq committed from this partition.
    last_seq          BIGINT NOT NULL,
    -- The consumer's ack floor as last observed: every seq at or below it is committed or
    -- dead-lettered; a consumer recreated after deletion starts just above it.
    safe_seq          BIGINT NOT NULL DEFAULT 0,
    rows_written      BIGINT NOT NULL DEFAULT 0,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, stream_partition)
);
