-- Each sample's group (the value of task.groupField), so that the dashboard computes a grouped
-- run's intervals as its status does: cluster-robust, one cluster per group.

ALTER TABLE samples ADD COLUMN sample_group text;

COMMENT ON COLUMN samples.sample_group IS 'The value of the sample''s task.groupField; NULL without one, and in rows written before schema 6 (each such sample counts as its own group).';
