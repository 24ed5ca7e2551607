"""eval-runner: runs one shard of an Evaluation (or a whole manifest locally) and reports it.

The pipeline stages live in their own modules: dataset -> prompt -> client -> scorers -> pipeline
(the sink: a live ShardSummary served at /progress and written to the termination message).
"""
