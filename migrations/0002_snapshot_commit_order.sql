-- Snapshots taken within the same second are ordered by when their manifest was sealed
-- (the manifest's committed_ns, 0 for older manifests), as the repository orders them.
ALTER TABLE snapshots ADD COLUMN committed_ns BIGINT NOT NULL DEFAULT 0;
