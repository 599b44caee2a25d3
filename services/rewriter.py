"""The prompt rewriter: an instruction-tuned seq2seq model (FLAN-T5 class) that turns what a user types
("a farmyard") into the literal, ordered caption style the generator was trained on ("a cow moos,
then a dog barks").

One class serves both scales: any local directory holding a transformers `T5ForConditionalGeneration`
and its tokenizer (a real FLAN-T5 at full scale, the mini T5 trained by `tta train rewriter`). Serving
decodes greedily; training samples K candidates and scores them by length-normalised log-likelihood,
the quantity the margin ranking loss orders. Whether a prompt is already descriptive enough to pass
through unchanged is the model's decision, learnt from data, never a keyword rule here: a rewriter whose
vocabulary holds the token KEEP answers it (and nothing else) for a prompt it leaves alone, and `rewrite`
then returns the prompt itself. Copying a caption token by token was the hard part for a small model (it
swapped events, which changes the meaning); deciding "this is already a caption" is a classification it
learns quickly. A FLAN-T5 without the token simply never answers it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from services.manifest import MANIFEST, checkpoint_version, verify_manifest
from services.modeling import CheckpointError
from services.validation import check_prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KEEP = "<keep>"  # the whole answer "leave this prompt as it is"; an added (non-special) token, so decoding keeps it
INSTRUCTION = "Rewrite this sound description into a detailed, literal description of the sounds and their order: {prompt}"


def instruction(prompt: str) -> str:
    """The model input for one user prompt (the service's prompt rules apply)."""
    return INSTRUCTION.format(prompt=" ".join(check_prompt(prompt).split()))


def resolve(prompt: str, output: str) -> str:
    """The text the generator gets for one model answer: the prompt itself for KEEP or an empty answer (a
    degenerate model should not send the generator nothing), else the answer."""
    return " ".join(prompt.split()) if output in ("", KEEP) else output


class PromptRewriter:
    """Tokenizer + T5ForConditionalGeneration from one local directory."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", max_input_tokens: int = 96, max_new_tokens: int = 48, version: str = "rewriter@unversioned") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_input_tokens = max_input_tokens
        self.max_new_tokens = max_new_tokens
        self.version = version

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **kwargs) -> PromptRewriter:
        from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"rewriter directory {directory} has no config.json")
        if (directory / MANIFEST).is_file():
            verify_manifest(directory)
        config = AutoConfig.from_pretrained(directory)
        if config.model_type not in ("t5", "mt5", "umt5"):
            raise CheckpointError(f"{directory}: the rewriter is a T5-class seq2seq model, got model_type {config.model_type!r}")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        # offline, transformers can hand back a tokenizer that silently lost its vocabulary
        if len(tokenizer) < 100 or len(tokenizer) > config.vocab_size:
            raise CheckpointError(f"{directory}: tokenizer has {len(tokenizer)} tokens, the model's embedding {config.vocab_size}")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise CheckpointError(f"{directory}: tokenizer lacks a pad or eos token")
        model = T5ForConditionalGeneration.from_pretrained(directory, dtype=dtype or torch.float32)
        return cls(model, tokenizer, device, version=checkpoint_version(directory), **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory

    # ------------------------------------------------------------------------- inference
    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        texts = [instruction(p) for p in prompts]
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_input_tokens, return_tensors="pt").to(self.device)

    def _decode(self, ids: torch.Tensor) -> list[str]:
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def greedy_outputs(self, prompts: list[str]) -> list[str]:
        """The model's greedy answers, one per prompt, as it wrote them (KEEP included)."""
        if not prompts:
            return []
        return self._decode(self.model.generate(**self._encode(prompts), do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens))

    def rewrite(self, prompts: list[str]) -> list[str]:
        """Greedy rewrites, one per prompt (what the service uses): the prompt itself where the model answers KEEP."""
        return [resolve(p, o) for p, o in zip(prompts, self.greedy_outputs(prompts))]

    @torch.no_grad()
    def sample(self, prompts: list[str], k: int, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> list[list[str]]:
        """K sampled answers per prompt (training candidates, as the model wrote them: `resolve` turns one into the
        generator's text); duplicates are kept, in sampling order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if seed is not None:
            torch.manual_seed(seed)
        out = self.model.generate(**self._encode(prompts), do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=k, max_new_tokens=self.max_new_tokens)
        texts = self._decode(out)
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]

    def sequence_scores(self, prompts: list[str], candidates: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Length-normalised log-likelihood s(c) = (1/|c|) sum_t log p(c_t | c_<t, prompt) of every candidate.

        candidates[i] are the rewrites of prompts[i] (ragged). Returns (scores [B, Kmax], valid mask
        [B, Kmax]); padding slots score 0 and are masked. Differentiable: the ranking loss trains on it."""
        if len(prompts) != len(candidates):
            raise ValueError(f"got {len(candidates)} candidate lists for {len(prompts)} prompts")
        k_max = max(len(c) for c in candidates)
        flat_prompts = [p for p, cands in zip(prompts, candidates) for _ in cands]
        flat_cands = [c for cands in candidates for c in cands]
        enc = self._encode(flat_prompts)
        labels = self.tokenizer(flat_cands, padding=True, truncation=True, max_length=self.max_new_tokens, return_tensors="pt")["input_ids"].to(self.device)
        mask = labels != self.tokenizer.pad_token_id
        logits = self.model(**enc, labels=labels.masked_fill(~mask, -100)).logits
        token_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        flat_scores = (token_logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        scores = torch.zeros(len(prompts), k_max, device=self.device)
        valid = torch.zeros(len(prompts), k_max, dtype=torch.bool, device=self.device)
        start = 0
        for i, cands in enumerate(candidates):
            scores[i, : len(cands)] = flat_scores[start : start + len(cands)]
            valid[i, : len(cands)] = True
            start += len(cands)
        return scores, valid


def load_rewriter(directory: str | Path | None = None, device: str | torch.device = "cpu") -> PromptRewriter:
    """The rewriter in `directory`, or the shipped mini rewriter (SFT + CLAP feedback; its SFT start is `rewriter-sft`)."""
    if directory is None:
        from services.checkpoints import shipped

        directory = shipped("rewriter")
    return PromptRewriter.from_pretrained(directory, device=device)
