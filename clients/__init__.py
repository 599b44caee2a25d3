"""Clients of the REST API: the Python SDK (sync and async, sdk.py) and the resumable batch runner
behind `tta batch` (batch.py)."""

from clients.sdk import AsyncTTAClient, Generation, GenerationBatch, RetryPolicy, TTAClient, TTAError

__all__ = ["AsyncTTAClient", "Generation", "GenerationBatch", "RetryPolicy", "TTAClient", "TTAError"]
