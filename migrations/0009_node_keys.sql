-- The node keys the projectors trust, each from the registration event that gave it
-- (EdgeNodeRegistered, or the central node's own CentralNodeRegistered), at that event's stream
-- sequence. A projector applies an event only if its node was registered before it and it
-- verifies against that registration's key; any other event is parked with the reason. Every
-- projector writes the registrations it applies here, in its batch's transaction, so one that
-- starts from a checkpoint knows the keys registered before it.
CREATE TABLE projection.node_keys (
    node_id     uuid NOT NULL,
    stream_seq  bigint NOT NULL,
    public_key  text NOT NULL,
    PRIMARY KEY (node_id, stream_seq)
);

-- The origin node of a parked envelope (none for a message that is no envelope), so the sync
-- status can show each node's refused events.
ALTER TABLE projection.parked ADD COLUMN node_id uuid;
