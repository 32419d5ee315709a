-- What a snapshot's own manifest cannot be trusted to say about itself.
-- `partial`: 1 when the backup skipped entries it could not read (the manifest lists them).
-- `snapshot_first_seen`: when this catalog first recorded each snapshot, kept across
-- `catalog sync` (which rebuilds `snapshots`): the RPO age uses it when it is earlier than
-- the manifest's own time, so a backup host whose clock runs fast cannot make old data
-- look fresh.
ALTER TABLE snapshots ADD COLUMN partial BIGINT NOT NULL DEFAULT 0;
CREATE TABLE snapshot_first_seen (
    id TEXT PRIMARY KEY,
    first_seen_at BIGINT NOT NULL
);
