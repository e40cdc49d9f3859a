"""The automatic gate: run LatentGate when a model registry changes.

An MLflow tracking server sends a webhook delivery when a model version is created or an alias
or tag is set. `receiver` verifies it and stores a job in the SQLite `queue`, and `worker` runs
the main job (`harness.evaluation.evaluate`) for it. `writeback` then tags the version and moves
a protected alias back when the verdict is not pass. `watch` polls the registry instead, for
stores and hosted services that send no webhooks. `install` creates the webhook on the MLflow
server. `config` reads gate.yaml.
"""
