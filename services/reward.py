"""The BATON audio reward model, and best-of-N reranking with it.

BATON's head: the frozen CLAP audio embedding and text embedding (512 each) concatenated, an MLP
1024 -> 512 -> 1 and a sigmoid, read as the probability that a person judges the clip faithful to
the prompt. `RewardModel` = a CLAP embedder + that head; the head also runs in ONNX Runtime
(onnxruntime-gpu: CUDA provider when a GPU is present, CPU provider otherwise).

A reward checkpoint directory holds the head (`config.json`, `model.safetensors`), `reward_head.onnx`
and names its CLAP in the config (a path relative to the directory, e.g. "../clap"): the head is only
meaningful with the embedder it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from services.clap import ClapEmbedder, load_clap
from services.manifest import MANIFEST, checkpoint_version
from services.modeling import CheckpointError, ConfigModel
from services.wording import InKnownWords, KnownWording

ONNX_NAME = "reward_head.onnx"


class RewardHeadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clap: str = "../clap"  # the CLAP whose embeddings the head reads (relative to the checkpoint directory)
    embed_dim: int = Field(512, ge=1)
    hidden_dim: int = Field(512, ge=1)
    # adds a learned multiple of the CLAP cosine to the logit: an MLP on concatenated embeddings has no
    # product of the two, so it can only approximate the text-audio match it is meant to judge
    cosine_skip: bool = False


class RewardHead(ConfigModel):
    """[audio embedding ; text embedding] -> MLP -> logit (sigmoid gives the acceptance probability).

    BATON's head exactly, unless `cosine_skip` adds w * cos(audio, text) to the logit. w starts at 10, so the
    CLAP's own judgement carries weight from the first step (starting at 0, the MLP fit the training pairs
    alone and w only reached 0.17)."""

    config_class = RewardHeadConfig

    def __init__(self, config: RewardHeadConfig) -> None:
        super().__init__(config)
        self.mlp = nn.Sequential(nn.Linear(2 * config.embed_dim, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, 1))
        if config.cosine_skip:
            self.cosine_weight = nn.Parameter(torch.tensor(10.0))

    def logits(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        logit = self.mlp(torch.cat([audio_emb, text_emb], dim=-1)).squeeze(-1)
        if self.config.cosine_skip:
            logit = logit + self.cosine_weight * nn.functional.cosine_similarity(audio_emb, text_emb, dim=-1)
        return logit

    def forward(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Reward in (0, 1), one per row."""
        return torch.sigmoid(self.logits(audio_emb, text_emb))


def reward_loss(head: RewardHead, audio_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BATON's objective: binary cross-entropy of the reward against the 0/1 human label."""
    return nn.functional.binary_cross_entropy_with_logits(head.logits(audio_emb, text_emb), labels.float())


# ----------------------------------------------------------------------------- ONNX
def export_onnx(head: RewardHead, path: str | Path) -> Path:
    """Export the head (embeddings -> reward) with a dynamic batch; weights inlined in one file."""
    path = Path(path)
    head = head.cpu().eval()
    d = head.config.embed_dim
    example = (torch.randn(2, d), torch.randn(2, d))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(head, example, input_names=["audio_embedding", "text_embedding"], output_names=["reward"], dynamic_shapes=({0: batch}, {0: batch}), dynamo=True, external_data=False)
    program.save(str(path), external_data=False)
    return path


def onnx_providers(device: str | torch.device | None = None) -> list[str]:
    """CUDA first when asked for (or when torch sees a GPU), always the CPU provider as fallback."""
    import onnxruntime as ort

    want_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if want_cuda and "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxRewardHead:
    """The exported head in ONNX Runtime; `providers` says where it actually runs."""

    def __init__(self, path: str | Path, device: str | torch.device | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no ONNX reward head at {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # ORT's worker threads spin after each run by default and starve the torch CLAP that runs
        # right before and after the head in the same process (measured 2x slower scoring on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=onnx_providers(device))

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        feeds = {"audio_embedding": np.ascontiguousarray(audio_emb, dtype=np.float32), "text_embedding": np.ascontiguousarray(text_emb, dtype=np.float32)}
        return self.session.run(["reward"], feeds)[0]


# ----------------------------------------------------------------------------- the reward model
def check_trained_clap(head_dir: Path, clap_dir: Path) -> None:
    """A head reads the embeddings of the CLAP it was trained on and no other: refuse the CLAP its config names
    when its MANIFEST records another (same weights = same manifest hash, whatever the directory is called)."""
    manifest = head_dir / MANIFEST
    trained_on = json.loads(manifest.read_text()).get("training", {}).get("clap") if manifest.is_file() else None
    found = checkpoint_version(clap_dir)
    if trained_on and "@" in trained_on and found.split("@")[-1] != trained_on.split("@")[-1]:
        raise CheckpointError(f"{head_dir}: the head was trained on the embeddings of {trained_on}, but its config names {clap_dir} ({found}); point `clap` in its config.json at that CLAP, or retrain the head (tta train reward --clap)")


class RewardModel:
    """CLAP embedder + reward head; scores (prompt, clip) pairs and reranks candidates per prompt."""

    def __init__(self, clap: ClapEmbedder, head: RewardHead, onnx_head: OnnxRewardHead | None = None) -> None:
        if head.config.embed_dim != clap.embed_dim:
            raise CheckpointError(f"reward head reads {head.config.embed_dim}-d embeddings, the CLAP gives {clap.embed_dim}")
        self.clap, self.head, self.onnx_head = clap, head.eval(), onnx_head

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", backend: str = "torch", clap: ClapEmbedder | None = None) -> RewardModel:
        """backend "torch" or "onnx" (the head in ONNX Runtime); `clap` overrides the one the config names."""
        if backend not in ("torch", "onnx"):
            raise ValueError(f"unknown backend {backend!r}: expected 'torch' or 'onnx'")
        directory = Path(directory)
        head = RewardHead.from_pretrained(directory, device)
        if clap is None:
            clap_dir = (directory / head.config.clap).resolve()
            check_trained_clap(directory, clap_dir)
            clap = load_clap(clap_dir, device)
        onnx_head = OnnxRewardHead(directory / ONNX_NAME, device) if backend == "onnx" else None
        return cls(clap, head, onnx_head)

    @property
    def backend(self) -> str:
        return "onnx" if self.onnx_head is not None else "torch"

    @torch.no_grad()
    def reward_from_embeddings(self, audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        if self.onnx_head is not None:
            return self.onnx_head(audio_emb, text_emb)
        device = next(self.head.parameters()).device
        return self.head(torch.from_numpy(np.asarray(audio_emb, np.float32)).to(device), torch.from_numpy(np.asarray(text_emb, np.float32)).to(device)).cpu().numpy()

    def score_pairs(self, texts: list[str], waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        """Reward of texts[i] with waveforms[i] -> [B] in (0, 1)."""
        if len(texts) != len(waveforms):
            raise ValueError(f"got {len(texts)} texts for {len(waveforms)} clips")
        return self.reward_from_embeddings(self.clap.embed_audio(waveforms, sample_rate), self.clap.embed_text(list(texts)))

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        """Rewards of the candidates [N, samples] of one prompt (the `services.pipeline.Reranker` protocol); the
        whole clip is judged, whatever `timeline` says (`ByStretch` reads it)."""
        audio = self.clap.embed_audio(waveforms, sample_rate)
        text = np.repeat(self.clap.embed_text([prompt]), len(audio), axis=0)
        return self.reward_from_embeddings(audio, text)


class ClapReranker:
    """Best-of-N by CLAP cosine between prompt and clip (the baseline the reward model must beat)."""

    backend = "clap-cosine"

    def __init__(self, clap: ClapEmbedder) -> None:
        self.clap = clap

    def score_pairs(self, texts: list[str], waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.clap.score(list(texts), waveforms, sample_rate)

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        return self.score_pairs([prompt] * len(waveforms), waveforms, sample_rate)


def stretch_only(waveforms: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Copies of [N, samples] that keep only the part-th of `parts` equal stretches (the rest silent):
    the stretch a generation timeline gave its part-th clause (services.timeline.token_time_mask)."""
    length = waveforms.shape[-1]
    out = np.zeros_like(waveforms)
    a, b = part * length // parts, (part + 1) * length // parts
    out[..., a:b] = waveforms[..., a:b]
    return out


def judged_by_stretch(score_pairs, prompt: str, waveforms: np.ndarray, sample_rate: int, clauses: list[str] | None, whole: np.ndarray | None = None) -> np.ndarray:
    """Scores [N] of one prompt's candidates. When the generator placed `clauses` (two or more) in successive
    equal stretches of the clip (a timeline), each clause is also judged on its own stretch alone, and a
    candidate scores the mean of its whole-clip score and its worst clause: a clip must hold the prompt as a
    whole (nothing unprompted) and every clause where it belongs. Otherwise the whole-clip score.
    `score_pairs(texts, waveforms, sample_rate)` scores texts[i] with waveforms[i]; `whole`, when given, holds
    the whole-clip scores already computed."""
    n = len(waveforms)
    whole = np.asarray(score_pairs([prompt] * n, waveforms, sample_rate) if whole is None else whole, dtype=np.float32)
    if not clauses or len(clauses) < 2:
        return whole
    per_clause = [np.asarray(score_pairs([c] * n, stretch_only(waveforms, i, len(clauses)), sample_rate), dtype=np.float32) for i, c in enumerate(clauses)]
    return (whole + np.min(per_clause, axis=0)) / 2


class ByStretch:
    """A reranker that also judges each clause on the stretch of the clip its timeline gave it
    (`judged_by_stretch`), for prompts the generator placed with a timeline; other prompts get the wrapped
    reranker's whole-clip score. On the clause-channel generator it picks better on temporal prompts
    (docs/results/rerank/served-control)."""

    def __init__(self, reranker: RewardModel | ClapReranker | InKnownWords) -> None:
        self.reranker = reranker
        self.clap = reranker.clap
        self.onnx_head = getattr(reranker, "onnx_head", None)

    @property
    def backend(self) -> str:
        return f"{self.reranker.backend}+by-stretch"

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        return judged_by_stretch(self.reranker.score_pairs, prompt, waveforms, sample_rate, timeline, whole=self.reranker.score(prompt, waveforms, sample_rate))


RERANKERS = ("reward", "clap")


def load_reranker(kind: str, directory: str | Path | None = None, device: str | torch.device = "cpu", backend: str = "onnx", by_stretch: bool = False, wording: str | Path | None = None) -> tuple[RewardModel | ClapReranker | InKnownWords | ByStretch, Path]:
    """The served reranker and its directory: "reward" (BATON's head; `backend` torch or onnx) or
    "clap" (CLAP cosine). `directory` defaults to the shipped reward model, or the shipped CLAP.
    `wording`: a known-wording directory the judge reads every prompt and clause in (`services.wording`).
    `by_stretch` also judges each clause of a timeline on its own stretch (`ByStretch`)."""
    from services.checkpoints import shipped

    if kind not in RERANKERS:
        raise ValueError(f"reranker must be one of {', '.join(RERANKERS)}, got {kind!r}")
    directory = Path(directory) if directory else shipped(kind)
    reranker = RewardModel.from_pretrained(directory, device, backend=backend) if kind == "reward" else ClapReranker(load_clap(directory, device))
    if wording is not None:
        reranker = InKnownWords(reranker, KnownWording.from_pretrained(wording))
    return (ByStretch(reranker) if by_stretch else reranker), directory
