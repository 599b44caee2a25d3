"""Audio front-end shared by every model: mel/STFT configs, log-mel, WAV I/O.

TANGO's values (16 kHz, n_fft 1024, hop 160, 64 mel bins, fmax 8000) are the default; smaller
models choose a coarser hop through the same config.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MelConfig keys: {sorted(unknown)}")
        return cls(**data)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced by `log_mel` for a clip of `num_samples` (centred STFT)."""
        return num_samples // self.hop_length + 1


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above (librosa's default, which TANGO uses).
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Slaney-normalised triangular filters, shape [n_mels, n_fft // 2 + 1]."""
    n_freqs = cfg.n_fft // 2 + 1
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, n_freqs)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """Waveform [B, samples] -> mel power or log-mel [B, n_mels, frames]."""

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel_basis", torch.from_numpy(mel_filterbank(cfg)), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def power(self, wav: torch.Tensor) -> torch.Tensor:
        return self.mel_basis @ self.stft(wav).abs().pow(2)

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None]
        return torch.stft(
            wav.float(),
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(self.power(wav).clamp_min(self.cfg.log_floor))

    def log_magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """TANGO/AudioLDM's vocoder features: log of the mel-filtered STFT magnitude (not power)."""
        return torch.log(self.magnitude(wav).clamp_min(self.cfg.log_floor))

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        return self.mel_basis @ self.stft(wav).abs()

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `stft` (overlap-add with the same window), trimmed to `length` samples."""
        c = self.cfg
        return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, self.window, center=True, length=length)


class GriffinLimVocoder(torch.nn.Module):
    """Log-magnitude mel [B, frames, mels] -> waveform [B, frames * hop], with no learned weights.

    The vocoder's contract is HiFi-GAN's (same input, same output length). The linear magnitude is
    recovered from the mel by non-negative least squares (multiplicative updates from the
    pseudo-inverse), the phase by fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99) from a
    fixed random start, so the same mel always gives the same audio. Why it exists: a small HiFi-GAN
    trained with spectral losses only cannot make steady high tones (the mini one drops whistles and
    bird chirps), while this keeps everything the mel holds."""

    def __init__(self, cfg: MelConfig, iterations: int = 32, nnls_iterations: int = 50, momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        if iterations < 1 or nnls_iterations < 0 or not 0 <= momentum < 1:
            raise ValueError(f"Griffin-Lim needs iterations >= 1, nnls_iterations >= 0 and 0 <= momentum < 1 (got {iterations}, {nnls_iterations}, {momentum})")
        self.cfg, self.iterations, self.nnls_iterations, self.momentum, self.seed = cfg, iterations, nnls_iterations, momentum, seed
        self.spectrogram = MelSpectrogram(cfg)  # the very STFT and filterbank whose output this inverts
        self.register_buffer("mel_pinv", torch.linalg.pinv(self.spectrogram.mel_basis), persistent=False)

    def linear_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel magnitude [B, mels, T] -> non-negative STFT magnitude [B, n_fft/2+1, T] whose mel is closest to it."""
        basis = self.spectrogram.mel_basis
        spec = (self.mel_pinv @ mel).clamp_min(1e-8)
        gram_target = basis.T @ mel
        for _ in range(self.nnls_iterations):
            spec = spec * gram_target / (basis.T @ (basis @ spec)).clamp_min(1e-12)
        return spec

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        log_mel = log_mel.float()
        if log_mel.dim() == 2:
            log_mel = log_mel[None]
        if log_mel.shape[-1] != self.cfg.n_mels:
            raise ValueError(f"Griffin-Lim vocoder takes [batch, frames, {self.cfg.n_mels}] log-mels, got {tuple(log_mel.shape)}")
        length = log_mel.shape[1] * self.cfg.hop_length
        # a centred STFT of frames * hop samples has one frame more than the mel: repeat the last
        mel = torch.cat([log_mel, log_mel[:, -1:]], dim=1).transpose(1, 2).exp()
        magnitude = self.linear_magnitude(mel)
        # one starting phase for every row: a clip's audio must not depend on its place in the batch
        phase = torch.rand(magnitude.shape[1:], generator=torch.Generator().manual_seed(self.seed)).to(magnitude.device)
        angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase.expand_as(magnitude))
        previous = torch.zeros_like(angles)
        for _ in range(self.iterations):
            rebuilt = self.spectrogram.stft(self.spectrogram.istft(magnitude * angles, length))
            angles = rebuilt - previous * (self.momentum / (1 + self.momentum))
            angles = angles / angles.abs().clamp_min(1e-16)
            previous = rebuilt
        return self.spectrogram.istft(magnitude * angles, length)


def to_float32_mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected mono or [samples, channels] audio, got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


def limit_peaks(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Each clip (last axis) whose absolute peak exceeds `peak`, scaled down to it; the others unchanged.

    Generators often overshoot full scale (a third of the mini generator's clips, up to 3.6x), and 16-bit files
    would hard-clip them: the judges scored one waveform while users got a distorted one
    (docs/results/baton/single-pretrain/delivered/). Scaling keeps the sound and only lowers its level."""
    audio = np.asarray(audio, dtype=np.float32)
    peaks = np.abs(audio).max(axis=-1, keepdims=True) if audio.size else np.zeros(audio.shape[:-1] + (1,), np.float32)
    return audio * np.minimum(1.0, peak / np.maximum(peaks, 1e-12)).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    sf.write(str(path), np.clip(to_float32_mono(audio), -1.0, 1.0), sample_rate, subtype="PCM_16")


def encode_audio(audio: np.ndarray, fmt: str = "wav", sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode a mono clip as WAV (16-bit PCM) or FLAC bytes."""
    fmt = fmt.lower()
    if fmt not in ("wav", "flac"):
        raise ValueError(f"unknown audio format {fmt!r}: expected 'wav' or 'flac'")
    buf = io.BytesIO()
    sf.write(buf, np.clip(to_float32_mono(audio), -1.0, 1.0), sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a mono float32 clip; resample with a polyphase filter if the file's rate differs."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    audio = to_float32_mono(audio)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(sr, sample_rate)
        audio = resample_poly(audio, sample_rate // g, sr // g).astype(np.float32)
    return audio
