"""Exit codes of a runner shard, as the operator's Job maps them.

A permanent error fails the index at once (the Job's podFailurePolicy maps EXIT_PERMANENT to
FailIndex); any other non-zero code is retried up to backoffLimitPerIndex.
"""

EXIT_OK = 0
EXIT_PERMANENT = 3
# Something the shard depends on was away for longer than it waits (the store): the Job
# retries the index after its pod back-off, and the new attempt resumes from the store.
EXIT_RETRY = 1
