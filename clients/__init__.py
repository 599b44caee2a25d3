"""Python SDK (sync + async) and batch CLI for the REST API (issue 7). Nothing here yet."""
