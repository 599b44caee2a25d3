"""Ray Serve deployments over services/: thin wrappers (app.py), HTTP schemas (schemas.py), serve
configs (configs/*.yaml, config.py) and metrics (metrics.py). schemas.py imports no Ray, so the
clients share it."""
