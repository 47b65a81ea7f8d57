-- The audit read model: every event exactly as recorded, with its envelope, and each node's
-- chain positions (node_seq, prev_hash, hash, signature) so that the history can be verified.

CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.events (
    event_id          uuid PRIMARY KEY,
    stream_seq        bigint NOT NULL,
    aggregate_type    text NOT NULL,
    aggregate_id      uuid NOT NULL,
    aggregate_version bigint NOT NULL,
    event_type        text NOT NULL,
    schema_version    integer NOT NULL,
    occurred_at       timestamptz NOT NULL,
    org_id            uuid NOT NULL,
    actor_user_id     uuid NOT NULL,
    actor_role        text NOT NULL,
    node_id           uuid NOT NULL,
    node_seq          bigint NOT NULL,
    command_id        uuid NOT NULL,
    correlation_id    uuid NOT NULL,
    causation_id      uuid NOT NULL,
    prev_hash         text NOT NULL,
    hash              text NOT NULL,
    signature         text NOT NULL,
    payload           jsonb NOT NULL,
    UNIQUE (node_id, node_seq)
);

CREATE INDEX events_by_aggregate ON audit.events (aggregate_type, aggregate_id, stream_seq);
CREATE INDEX events_by_actor ON audit.events (actor_user_id, occurred_at);
CREATE INDEX events_by_type ON audit.events (event_type, occurred_at);
CREATE INDEX events_by_org ON audit.events (org_id, occurred_at);
CREATE INDEX events_by_time ON audit.events (occurred_at);

-- The node keys that signatures are verified against, as EdgeNodeRegistered recorded them.
CREATE TABLE audit.node_keys (
    node_id       uuid PRIMARY KEY,
    hospital_id   uuid NOT NULL,
    public_key    text NOT NULL,
    registered_at timestamptz NOT NULL,
    event_id      uuid NOT NULL
);
