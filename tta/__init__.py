"""Aligned text-to-audio: the `tta` command line."""

__version__ = "0.1.0"
