-- Read markers: how far each user has read in each channel. Written by the gateway with
-- `seq = GREATEST(old, new)` semantics (only a newer marker moves it), committed before the
-- client's `read_ack`; read at `hello` into `welcome.channels[].last_read`.
CREATE TABLE read_markers (
    user_id     BIGINT NOT NULL REFERENCES users (id),
    channel_id  BIGINT NOT NULL REFERENCES channels (id),
    seq         BIGINT NOT NULL CHECK (seq > 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, channel_id)
);
