-- The audit history read in the order it reached the stream: the query API's event list pages
-- by stream_seq, and `hms audit replay` streams the whole history in that order without a sort.

CREATE INDEX events_by_stream_seq ON audit.events (stream_seq);
