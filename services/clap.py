"""CLAP: one embedder interface over two models.

- Full scale: transformers `ClapModel` (the LAION-CLAP architecture) with its `ClapProcessor`, from
  an HF-format directory (e.g. laion/clap-htsat-unfused), or converted from an original laion-clap
  `.pt` checkpoint (630k-audioset-best.pt, the fusion variants) by `convert_laion_clap_state_dict`.
- Mini: `MiniClapModel`, a small audio tower on log-mel and a text head over the frozen MiniLM token
  states, trained contrastively on the synthetic world (`tta train clap`).

Both give L2-normalised vectors (`embed_text`, `embed_audio`, resampling audio to the model's rate
inside) and `score(texts, audios)` = cosine of each (text, audio) pair. `load_clap(directory)` picks
the class from the directory's config.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from services.audio import MelConfig, MelSpectrogram
from services.manifest import MANIFEST, verify_manifest
from services.modeling import CONFIG_NAME, CheckpointError, ConfigModel
from services.text_encoder import MINILM, TextEncoder


def resample(waveforms: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """[B, samples] float32 at sample_rate -> target_rate (polyphase filter; a no-op when equal)."""
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim == 1:
        waveforms = waveforms[None]
    if waveforms.ndim != 2:
        raise ValueError(f"expected waveforms [batch, samples], got shape {waveforms.shape}")
    if sample_rate == target_rate:
        return waveforms
    from scipy.signal import resample_poly

    g = math.gcd(int(sample_rate), int(target_rate))
    return resample_poly(waveforms, target_rate // g, sample_rate // g, axis=-1).astype(np.float32)


class ClapEmbedder:
    """Text and audio into one L2-normalised space; subclasses implement the two encoders."""

    sample_rate: int
    device: torch.device
    embed_dim: int

    def embed_text(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_audio(self, waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def score(self, texts: list[str], waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        """Cosine similarity of texts[i] with waveforms[i] -> [B]."""
        if len(texts) != len(waveforms):
            raise ValueError(f"got {len(texts)} texts for {len(waveforms)} clips")
        return np.sum(self.embed_text(list(texts)) * self.embed_audio(waveforms, sample_rate), axis=-1)


# ----------------------------------------------------------------------------- full scale (transformers)
def projected(features) -> torch.Tensor:
    """ClapModel.get_*_features: a tensor in transformers 4, an output whose pooler_output is the
    (normalised) projection in transformers 5."""
    return features if torch.is_tensor(features) else features.pooler_output


class HFClap(ClapEmbedder):
    """transformers ClapModel + ClapProcessor from a local HF-format directory."""

    def __init__(self, model, processor, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        # the features must fit the model: 4 stacked views for fusion models, one (cropped) view otherwise
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> HFClap:
        from transformers import ClapModel, ClapProcessor

        directory = Path(directory)
        model = ClapModel.from_pretrained(directory)
        processor = ClapProcessor.from_pretrained(directory)
        vocab = model.config.text_config.vocab_size
        # offline, transformers can hand back a tokenizer that silently lost its vocabulary
        if len(processor.tokenizer) < 10 or len(processor.tokenizer) > vocab + 1000:
            raise CheckpointError(f"{directory}: tokenizer has {len(processor.tokenizer)} tokens, the model {vocab}")
        return cls(model, processor, device)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.processor(text=list(texts[i : i + self.batch_size]), return_tensors="pt", padding=True).to(self.device)
            out.append(F.normalize(projected(self.model.get_text_features(**batch)), dim=-1).float().cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def embed_audio(self, waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = resample(waveforms, sample_rate, self.sample_rate)
        out = []
        for i in range(0, len(audio), self.batch_size):
            feats = self.processor(audio=list(audio[i : i + self.batch_size]), sampling_rate=self.sample_rate, truncation=self.truncation, return_tensors="pt").to(self.device)
            out.append(F.normalize(projected(self.model.get_audio_features(**feats)), dim=-1).float().cpu())
        return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- laion-clap .pt -> transformers
# Keys of the original checkpoints with no counterpart in ClapModel, and why dropping them loses nothing:
LAION_DROPPED = {
    r"^audio_branch\.spectrogram_extractor\.": "STFT basis: ClapFeatureExtractor computes the spectrogram",
    r"^audio_branch\.logmel_extractor\.": "mel filterbank: ClapFeatureExtractor computes the mel",
    r"^audio_branch\.(tscam_conv|head)\.": "AudioSet classification head, unused by the embedding",
    r"^audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$": "shifted-window mask, recomputed by transformers",
    r"^(audio|text)_transform\.": "the MLP of laion-clap's training loss, unused by the embedding",
}
# buffers transformers fills itself and a checkpoint may lack (older laion files have position_ids)
HF_CONSTANT_BUFFERS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")
_RENAMES = [
    (r"^text_branch\.", "text_model."),
    (r"^(text|audio)_projection\.0\.", r"\1_projection.linear1."),
    (r"^(text|audio)_projection\.2\.", r"\1_projection.linear2."),
    (r"^audio_branch\.bn0\.", "audio_model.audio_encoder.batch_norm."),
    (r"^audio_branch\.", "audio_model.audio_encoder."),
    (r"\.blocks\.(\d+)\.norm1\.", r".blocks.\1.layernorm_before."),
    (r"\.blocks\.(\d+)\.norm2\.", r".blocks.\1.layernorm_after."),
    (r"\.blocks\.(\d+)\.attn\.proj\.", r".blocks.\1.attention.output.dense."),
    (r"\.blocks\.(\d+)\.attn\.relative_position_", r".blocks.\1.attention.self.relative_position_"),
    (r"\.blocks\.(\d+)\.mlp\.fc1\.", r".blocks.\1.intermediate.dense."),
    (r"\.blocks\.(\d+)\.mlp\.fc2\.", r".blocks.\1.output.dense."),
]
_QKV = re.compile(r"^(.*\.blocks\.\d+)\.attn\.qkv\.(weight|bias)$")


class ConversionError(ValueError):
    """An original checkpoint has keys the mapping does not know, or lacks ones the model needs."""


def convert_laion_clap_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """laion-clap state dict -> ClapModel state dict, plus {dropped key: reason}.

    Accepts the DDP `module.` prefix. Every key is either renamed, split (fused qkv -> query, key,
    value) or dropped for a stated reason; any other key is an error (no silent leftovers).
    """
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        reason = next((why for pattern, why in LAION_DROPPED.items() if re.search(pattern, key)), None)
        if reason:
            dropped[key] = reason
            continue
        if not key.startswith(("text_branch.", "audio_branch.", "text_projection.", "audio_projection.", "logit_scale_")):
            unknown.append(key)
            continue
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        m = _QKV.match(new)
        if m:
            prefix, kind = m.groups()
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{prefix}.attention.self.{name}.{kind}"] = part
            continue
        out[new] = value
    if unknown:
        raise ConversionError(f"{len(unknown)} key(s) of the original checkpoint have no mapping: {unknown[:10]}")
    return out, dropped


def laion_clap_config(enable_fusion: bool):
    """ClapConfig of the released HTSAT-tiny + roberta-base checkpoints (630k-audioset-*.pt)."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text = ClapTextConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio = ClapAudioConfig(enable_fusion=enable_fusion, fusion_type="aff_2d" if enable_fusion else None)
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512)


def load_laion_clap_checkpoint(path: str | Path, config=None):
    """A laion-clap `.pt` file -> transformers ClapModel (fusion detected from the keys)."""
    from transformers import ClapModel

    data = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle objects
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{path}: not a laion-clap checkpoint (no state_dict)")
    converted, _ = convert_laion_clap_state_dict(state)
    fusion = any(".fusion_model." in k for k in converted)
    model = ClapModel(config or laion_clap_config(fusion))
    check_converted(converted, model.state_dict())
    model.load_state_dict(converted, strict=False)  # strict except the constant buffers, checked above
    return model.eval()


def check_converted(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every model key present with the same shape (but constant buffers), nothing extra."""
    missing = [k for k in expected if k not in converted and k not in HF_CONSTANT_BUFFERS]
    extra = [k for k in converted if k not in expected]
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    if missing or extra or shapes:
        raise ConversionError(f"converted checkpoint does not fit ClapModel: missing {missing[:5]}, extra {extra[:5]}, shape mismatches {shapes[:5]}")


# ----------------------------------------------------------------------------- mini (trained on the world)
class MiniClapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_encoder: str = MINILM
    text_max_length: int = Field(64, ge=8)
    text_layers: int = Field(1, ge=0)
    mel: dict = Field(default_factory=lambda: MelConfig(hop_length=512).to_dict())
    channels: list[int] = Field(default=[16, 32, 64, 128], min_length=4, max_length=4)
    audio_layers: int = Field(2, ge=0)
    max_audio_tokens: int = Field(64, ge=1)  # time steps after the conv stack (x16 hops: 0.5 s each at 16 kHz)
    embed_dim: int = Field(512, ge=8)
    text_dim: int = Field(384, ge=8)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # one conv per scale: the tower must stay cheap enough to train on a 2-core CPU
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU(), nn.AvgPool2d(2))


class MiniClapModel(ConfigModel):
    """Trainable parts of the mini CLAP: audio tower (log-mel -> CNN -> transformer over time) and a
    text head (one transformer layer + pooling over frozen MiniLM token states), CLAP-style projections."""

    config_class = MiniClapConfig

    def __init__(self, config: MiniClapConfig) -> None:
        super().__init__(config)
        self.mel_cfg = MelConfig.from_dict(config.mel)
        self.frontend = MelSpectrogram(self.mel_cfg)
        c = config.channels
        self.input_norm = nn.BatchNorm1d(self.mel_cfg.n_mels)
        self.convs = nn.Sequential(_conv_block(1, c[0]), _conv_block(c[0], c[1]), _conv_block(c[1], c[2]), _conv_block(c[2], c[3]))
        width = c[3]
        self.audio_pos = nn.Parameter(torch.zeros(1, config.max_audio_tokens, width))
        layer = lambda d: nn.TransformerEncoderLayer(d, nhead=4 if d % 4 == 0 else 1, dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True)  # noqa: E731
        self.audio_blocks = nn.TransformerEncoder(layer(width), config.audio_layers, enable_nested_tensor=False) if config.audio_layers else nn.Identity()
        self.text_blocks = nn.TransformerEncoder(layer(config.text_dim), config.text_layers, enable_nested_tensor=False) if config.text_layers else None
        # CLAP's projection: Linear -> ReLU -> Linear
        self.audio_projection = nn.Sequential(nn.Linear(2 * width, config.embed_dim), nn.ReLU(), nn.Linear(config.embed_dim, config.embed_dim))
        self.text_projection = nn.Sequential(nn.Linear(2 * config.text_dim, config.embed_dim), nn.ReLU(), nn.Linear(config.embed_dim, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> log-mel [B, n_mels, frames] (frames cut to a multiple of 16)."""
        logmel = self.frontend(wav)
        return logmel[..., : logmel.shape[-1] // 16 * 16]

    def audio_forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, n_mels, T] -> unnormalised audio embedding [B, embed_dim]."""
        x = self.convs(self.input_norm(logmel).unsqueeze(1))  # [B, C, F/16, T/16]
        x = x.mean(2).transpose(1, 2)  # [B, T/16, C]
        if x.shape[1] > self.config.max_audio_tokens:
            raise ValueError(f"clip too long for this CLAP: {x.shape[1]} steps > {self.config.max_audio_tokens}")
        x = self.audio_blocks(x + self.audio_pos[:, : x.shape[1]])
        return self.audio_projection(torch.cat([x.mean(1), x.amax(1)], dim=-1))

    def text_forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Frozen encoder token states [B, L, D] + mask -> unnormalised text embedding [B, embed_dim]."""
        if self.text_blocks is not None:
            states = self.text_blocks(states, src_key_padding_mask=~mask.bool())
        m = mask[..., None].to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp_min(1)
        peak = states.masked_fill(m == 0, -1e4).amax(1)
        return self.text_projection(torch.cat([mean, peak], dim=-1))


MIN_AUDIO_S = 1.0


class MiniClap(ClapEmbedder):
    """MiniClapModel + the frozen MiniLM it reads text through."""

    def __init__(self, model: MiniClapModel, text_encoder: TextEncoder, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device)
        self.batch_size = batch_size
        self.sample_rate = model.sample_rate

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> MiniClap:
        model = MiniClapModel.from_pretrained(directory)
        text_encoder = TextEncoder.from_pretrained(model.config.text_encoder, max_length=model.config.text_max_length, base=Path(directory))
        if text_encoder.hidden_size != model.config.text_dim:
            raise CheckpointError(f"{directory}: text encoder gives {text_encoder.hidden_size}-d states, the CLAP expects {model.config.text_dim}")
        return cls(model, text_encoder, device)

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            states, mask = self.text_encoder(list(texts[i : i + self.batch_size]))
            out.append(F.normalize(self.model.text_forward(states, mask), dim=-1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)

    @torch.no_grad()
    def embed_audio(self, waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        # a copy: arrays from the Ray object store are read-only, which torch.from_numpy warns about
        audio = torch.tensor(resample(waveforms, sample_rate, self.sample_rate), dtype=torch.float32)
        # the audio tower downsamples time 8x; clips under MIN_AUDIO_S would vanish in it: pad with silence
        audio = F.pad(audio, (0, max(0, int(MIN_AUDIO_S * self.sample_rate) - audio.shape[-1])))
        out = []
        for i in range(0, len(audio), self.batch_size):
            logmel = self.model.features(audio[i : i + self.batch_size].to(self.device))
            out.append(F.normalize(self.model.audio_forward(logmel), dim=-1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)


def load_clap(directory: str | Path, device: str | torch.device = "cpu") -> ClapEmbedder:
    """A CLAP from a directory: an HF ClapModel directory (model_type "clap") or a mini CLAP."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: missing {CONFIG_NAME} (not a CLAP checkpoint directory)")
    try:
        is_hf = json.loads(path.read_text()).get("model_type") == "clap"
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not JSON ({exc})") from exc
    if not is_hf:
        return MiniClap.from_pretrained(directory, device)  # verifies its manifest itself
    if (directory / MANIFEST).is_file():
        verify_manifest(directory)
    return HFClap.from_pretrained(directory, device)
