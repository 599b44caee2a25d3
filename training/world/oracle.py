"""The oracle: a frame-level, multi-label sound-event detector trained on the world's ground truth.

It is the simulated annotator and the evaluator of every later model, so it reports presence
(clip level) and onset/offset (frame level) per class. CRNN: log-mel -> 3 conv blocks pooling
frequency away -> BiGRU over time -> per-frame sigmoid per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from services.audio import MelConfig, MelSpectrogram
from services.modeling import ConfigModel
from training.world.clips import CLIP_SAMPLES, EventTruth
from training.world.events import EVENT_IDS

ORACLE_MEL = MelConfig(n_fft=1024, win_length=1024, hop_length=512, n_mels=64)


class OracleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    class_ids: list[str] = Field(default_factory=lambda: list(EVENT_IDS), min_length=1)
    mel: dict = Field(default_factory=ORACLE_MEL.to_dict)
    channels: list[int] = Field(default=[24, 48, 96], min_length=3, max_length=3)
    rnn_hidden: int = 64
    time_pool: int = 2  # output frame = time_pool input frames
    threshold: float = 0.5
    min_frames: int = 2  # an event must be active this many output frames to count


def _block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(pool),
    )


@dataclass
class Detection:
    """What the oracle heard in one clip."""

    presence: dict[str, float]  # class -> max frame probability
    events: list[EventTruth]  # detected events (first active segment onset, last offset), by onset

    def present(self) -> set[str]:
        return {e.event for e in self.events}

    def onset(self, event: str) -> float | None:
        return next((e.onset for e in self.events if e.event == event), None)


class SoundEventDetector(ConfigModel):
    config_class = OracleConfig

    def __init__(self, config: OracleConfig) -> None:
        super().__init__(config)
        self.mel_cfg = MelConfig.from_dict(config.mel)
        self.frontend = MelSpectrogram(self.mel_cfg)
        c1, c2, c3 = config.channels
        freq = self.mel_cfg.n_mels
        if freq % 64:
            raise ValueError("the oracle's conv stack pools frequency by 64: n_mels must be a multiple of 64")
        self.input_norm = nn.BatchNorm1d(freq)
        self.convs = nn.Sequential(_block(1, c1, (4, 1)), _block(c1, c2, (4, config.time_pool)), _block(c2, c3, (freq // 16, 1)))
        self.rnn = nn.GRU(c3, config.rnn_hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * config.rnn_hidden, len(config.class_ids))

    @property
    def frame_seconds(self) -> float:
        return self.mel_cfg.hop_length * self.config.time_pool / self.mel_cfg.sample_rate

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> log-mel [B, n_mels, frames], frames a multiple of time_pool."""
        logmel = self.frontend(wav)
        t = logmel.shape[-1] // self.config.time_pool * self.config.time_pool
        return logmel[..., :t]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, n_mels, T] -> frame logits [B, T / time_pool, classes]."""
        x = self.input_norm(logmel).unsqueeze(1)
        x = self.convs(x)  # [B, C, 1, T']
        x = x.squeeze(2).transpose(1, 2)
        x, _ = self.rnn(x)
        return self.head(x)

    @torch.no_grad()
    def frame_probs(self, audio: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Audio [B, samples] (any length >= 0.2 s) -> frame probabilities [B, frames, classes]."""
        wav = torch.as_tensor(np.asarray(audio, dtype=np.float32)) if not torch.is_tensor(audio) else audio.float()
        if wav.dim() == 1:
            wav = wav[None]
        if wav.shape[-1] < self.mel_cfg.sample_rate // 5:
            raise ValueError(f"audio of {wav.shape[-1]} samples is too short for the oracle (need >= 0.2 s)")
        device = next(self.parameters()).device
        self.eval()
        outs = []
        for i in range(0, len(wav), batch_size):
            logits = self(self.features(wav[i : i + batch_size].to(device)))
            outs.append(torch.sigmoid(logits).cpu())
        return torch.cat(outs).numpy()

    def detect(self, audio: np.ndarray | torch.Tensor, batch_size: int = 64) -> list[Detection]:
        probs = self.frame_probs(audio, batch_size)
        return [self._decode(p) for p in probs]

    def _decode(self, probs: np.ndarray) -> Detection:
        # median filter over 3 frames: removes single-frame blips without moving onsets
        padded = np.pad(probs, ((1, 1), (0, 0)), mode="edge")
        smooth = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
        active = smooth > self.config.threshold
        presence, events = {}, []
        dt = self.frame_seconds
        for c, name in enumerate(self.config.class_ids):
            presence[name] = float(smooth[:, c].max())
            frames = np.flatnonzero(active[:, c])
            if len(frames) >= self.config.min_frames:
                events.append(EventTruth(event=name, onset=round(frames[0] * dt, 4), offset=round((frames[-1] + 1) * dt, 4)))
        events.sort(key=lambda e: e.onset)
        return Detection(presence, events)


def frame_targets(events: list[EventTruth], class_ids: list[str], n_frames: int, frame_seconds: float) -> np.ndarray:
    """Ground truth -> [n_frames, classes] 0/1, a frame active where it overlaps the event."""
    y = np.zeros((n_frames, len(class_ids)), dtype=np.float32)
    index = {c: i for i, c in enumerate(class_ids)}
    for e in events:
        a = int(np.floor(e.onset / frame_seconds))
        b = int(np.ceil(e.offset / frame_seconds))
        y[max(a, 0) : min(b, n_frames), index[e.event]] = 1.0
    return y


def output_frames(model_or_config: SoundEventDetector | OracleConfig, num_samples: int = CLIP_SAMPLES) -> int:
    cfg = model_or_config.config if isinstance(model_or_config, SoundEventDetector) else model_or_config
    mel = MelConfig.from_dict(cfg.mel)
    return mel.num_frames(num_samples) // cfg.time_pool


def load_oracle(path: str | None = None, device: str = "cpu") -> SoundEventDetector:
    """The shipped oracle, or one from a checkpoint directory."""
    from services.checkpoints import shipped

    return SoundEventDetector.from_pretrained(path or shipped("oracle"), device=device)
