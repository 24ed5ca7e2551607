"""Exit codes of a runner shard, as the operator's Job maps them.

A permanent error fails the index at once (the Job's podFailurePolicy maps EXIT_PERMANENT to
FailIndex); any other non-zero code is retried up to backoffLimitPerIndex.
"""

EXIT_OK = 0
EXIT_PERMANENT = 3
