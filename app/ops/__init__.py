"""Running the service: the per-request hook (access log, metrics, spans), health, metrics,
tracing, logs, connection balancing, TLS, the drain and the worker supervisor.

Wired into an app by `app.factory` only (the import contract in pyproject.toml).
"""
