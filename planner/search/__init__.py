"""The orchestrator: Optuna study, objective, artifact cache.  The only place (besides the CLI) that meets every stage."""
