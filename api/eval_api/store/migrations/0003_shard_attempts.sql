-- Every start of a shard, so attempts are numbered exactly even when an attempt died before
-- writing a single sample.

CREATE TABLE shard_attempts (
    evaluation_uid text        NOT NULL,
    run            text        NOT NULL,
    shard          integer     NOT NULL,
    attempt        integer     NOT NULL,
    resumed        integer     NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evaluation_uid, run, shard, attempt),
    FOREIGN KEY (evaluation_uid, run) REFERENCES runs (evaluation_uid, run)
);

COMMENT ON TABLE shard_attempts IS 'One row per shard start: attempt n is 1 + the attempts before it.';
COMMENT ON COLUMN shard_attempts.resumed IS 'Samples the attempt found already stored (and did not ask again).';
