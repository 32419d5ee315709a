-- lifeboat catalog, schema 6: RDS snapshots are rows of `snapshots` like repository
-- snapshots (id = the DB snapshot identifier, region = the AWS region, present = available
-- there). `state` says more where a row is not present: `creating`, `copying` or `failed`,
-- and `detail` why. Both are NULL for repository snapshots.
ALTER TABLE snapshots ADD COLUMN state TEXT;
ALTER TABLE snapshots ADD COLUMN detail TEXT;
