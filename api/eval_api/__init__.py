"""The evals.io API, shared by the operator and the runner.

- v1alpha1: the typed models of the custom resources (the one source of truth);
- crdgen: the CRDs and the API reference generated from them;
- shard, aggregate, stats: what a runner pod reports and how the operator sums it up;
- verdict: whether thresholds hold;
- environment, exitcodes: the runner pod's side of the Job the operator builds.
"""
