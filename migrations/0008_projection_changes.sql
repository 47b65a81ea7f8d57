-- What each committed batch of a live projector changed, for the query API's answer cache: it
-- reads the rows added since its last look (every 100 ms) and forgets only the answers they
-- touch. A row names the patients and doctors whose records or appointments the batch changed,
-- and each (doctor, day) whose appointments changed, as two arrays of the same length (for the
-- hospital model; the other models name none, and every answer of theirs is forgotten);
-- `everything` says the model's tables were replaced (a rebuild's swap).
--
-- Rows of one model are written while its checkpoint row is locked (the projector's batch, the
-- rebuild's swap), so their ids increase in the order they commit: a reader that takes the rows
-- above the last id it saw, model by model, misses none. The projector deletes rows older than
-- a few minutes.
CREATE TABLE projection.changes (
    id          bigserial PRIMARY KEY,
    model       text NOT NULL,
    stream_seq  bigint NOT NULL,
    everything  boolean NOT NULL DEFAULT false,
    patients    uuid[] NOT NULL DEFAULT '{}',
    doctors     uuid[] NOT NULL DEFAULT '{}',
    day_doctors uuid[] NOT NULL DEFAULT '{}',
    days        date[] NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_by_model ON projection.changes (model, id);
