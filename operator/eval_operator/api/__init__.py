"""The evals.io API: typed models shared by the operator and the runner."""
