"""Recording: MLflow observer of trials, self-describing manifests."""
