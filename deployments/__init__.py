"""Ray Serve deployments over services/ (issue 7): thin wrappers, FastAPI ingress, serve config.

Nothing here yet; services/ holds the model code they will wrap and never imports Ray.
"""
