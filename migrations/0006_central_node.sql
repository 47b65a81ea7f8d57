-- The central command service's node registers its own key (CentralNodeRegistered) beside the
-- edges' keys: it belongs to no hospital, so its row has no hospital_id.

ALTER TABLE audit.node_keys ALTER COLUMN hospital_id DROP NOT NULL;
