-- The projectors' own bookkeeping, kept apart from the read models so that a read model's
-- schemas hold only what it shows. Every row is keyed by the model it belongs to; a rebuild
-- writes under `<model>_rebuild` and the swap renames its rows along with its schemas.

CREATE SCHEMA IF NOT EXISTS projection;

-- The last stream sequence at or below which every message has been applied (or dropped as a
-- duplicate, or parked): on start, anything at or below it is skipped.
CREATE TABLE projection.checkpoints (
    model      text PRIMARY KEY,
    stream_seq bigint NOT NULL DEFAULT 0 CHECK (stream_seq >= 0)
);

-- Per origin node, the highest node_seq applied: at or below it is a duplicate, above it plus
-- one is a gap that waits.
CREATE TABLE projection.node_progress (
    model    text NOT NULL,
    node_id  uuid NOT NULL,
    node_seq bigint NOT NULL CHECK (node_seq > 0),
    PRIMARY KEY (model, node_id)
);

-- Messages that could not be read at all, with the reason: never dropped silently, never
-- holding back the stream.
CREATE TABLE projection.parked (
    model      text NOT NULL,
    stream_seq bigint NOT NULL,
    subject    text NOT NULL,
    reason     text NOT NULL,
    body       text NOT NULL,
    PRIMARY KEY (model, stream_seq)
);
