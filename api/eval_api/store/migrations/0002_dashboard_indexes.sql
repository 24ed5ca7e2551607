-- What the dashboard and resumed shards ask: a run's samples by shard (resume, per-shard
-- progress), its errored samples by class, an evaluation's runs newest first, a suite's runs.
-- The per-scorer aggregates of a run read its samples through the primary key's
-- (evaluation_uid, run) prefix.

CREATE INDEX samples_by_shard ON samples (evaluation_uid, run, shard);
CREATE INDEX samples_errored ON samples (evaluation_uid, run, error_class)
    WHERE error_class IS NOT NULL;
CREATE INDEX runs_by_evaluation ON runs (namespace, evaluation_name, started_at DESC);
CREATE INDEX runs_by_spec ON runs (evaluation_uid, spec_hash, started_at DESC);
CREATE INDEX runs_by_suite ON runs (suite, started_at DESC) WHERE suite IS NOT NULL;
