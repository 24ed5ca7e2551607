"""eval-operator: model evaluation as a Kubernetes resource."""
