"""Exit codes of a runner shard, as the operator's Job maps them.

A permanent error fails the index at once (the Job's podFailurePolicy maps EXIT_PERMANENT to
FailIndex); a store that was away is retried without spending a retry (EXIT_STORE_AWAY is
Ignored); any other non-zero code is retried up to backoffLimitPerIndex.
"""

EXIT_OK = 0
EXIT_PERMANENT = 3
# A crash or a failure of the shard itself: retried up to backoffLimitPerIndex.
EXIT_RETRY = 1
# The store was away for longer than the shard waits (a node drain, a PostgreSQL restart): not
# the shard's fault, so the Job's podFailurePolicy Ignores it (no retry of
# backoffLimitPerIndex spent) and makes a new pod, which resumes from the store. Each attempt
# waits for the store before it gives up, so the attempts are spaced; activeDeadlineSeconds
# bounds a store that never comes back.
EXIT_STORE_AWAY = 4
