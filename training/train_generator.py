"""`tta train generator --scale mini`: train the mini TANGO (VAE, HiFi-GAN vocoder, UNet) on the world.

Reads top to bottom: the mini configs, data (train clips rendered once and cached as log-mel
magnitudes, captions, and a subset of waveforms for the vocoder), then one stage per component:

1. VAE (`AutoencoderKL`): log-mel [B, 1, frames, mels] <-> 8-channel latent at 1/4 resolution, L1 + small KL.
2. Vocoder (`SpeechT5HifiGan`): log-mel -> waveform, multi-resolution STFT + mel losses on random crops.
3. UNet (`UNet2DConditionModel`): v-prediction on scaled VAE latents, frozen MiniLM text states,
   10% empty-prompt dropout for classifier-free guidance, Min-SNR-5 weighting, EMA weights.

Every stage keeps `train_state.pt` in its work directory (weights, optimiser, step) and resumes from
it; finished components are saved as diffusers/transformers directories and assembled into one
generator directory with a MANIFEST.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from services.audio import MelConfig, MelSpectrogram
from services.clauses import text_states
from services.generator import GeneratorConfig, TangoPipeline, with_position_channels, with_token_positions
from services.manifest import MANIFEST, checkpoint_version, current_commit, write_manifest
from services.text_encoder import MINILM, TextEncoder
from training.world.clips import CLIP_SAMPLES, make_clip

# ----------------------------------------------------------------------------- mini configs
MINI_MEL = MelConfig(n_fft=1024, win_length=1024, hop_length=512, n_mels=64)
MINI_FRAMES = CLIP_SAMPLES // MINI_MEL.hop_length  # 128 frames for a 4.096 s clip
TEXT_MAX_LENGTH = 48

MINI_VAE = dict(
    in_channels=1,
    out_channels=1,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64],
    layers_per_block=1,
    latent_channels=8,
    norm_num_groups=8,
    sample_size=MINI_FRAMES,
)
MINI_VOCODER = dict(
    model_in_dim=MINI_MEL.n_mels,
    sampling_rate=MINI_MEL.sample_rate,
    upsample_initial_channel=128,
    upsample_rates=[8, 8, 4, 2],  # product = hop 512
    upsample_kernel_sizes=[16, 16, 8, 4],
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    normalize_before=False,
)
MINI_UNET = dict(
    sample_size=[MINI_FRAMES // 4, MINI_MEL.n_mels // 4],
    in_channels=8,
    out_channels=8,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # attention only at 1/2 and 1/4 of the latent
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[64, 128, 192],
    layers_per_block=1,
    cross_attention_dim=384,
    attention_head_dim=32,
    norm_num_groups=32,
)
# SD-2.1's scheduler, as TANGO uses it
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    clip_sample=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def log_mel(wav: torch.Tensor, mel: MelSpectrogram, frames: int) -> torch.Tensor:
    """TANGO/AudioLDM features: log of the mel-filtered STFT magnitude, [B, frames, mels]."""
    return mel.log_magnitude(wav)[..., :frames].transpose(1, 2)


# ----------------------------------------------------------------------------- data
def _render_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[str], np.ndarray]:
    seed, start, stop, n_audio = args
    torch.set_num_threads(1)
    mel = MelSpectrogram(MINI_MEL)
    mels, captions, audio = [], [], []
    for i in range(start, stop):
        clip = make_clip(seed, "train", i)
        with torch.no_grad():
            mels.append(log_mel(torch.from_numpy(clip.audio)[None], mel, MINI_FRAMES)[0].numpy().astype(np.float16))
        captions.append(clip.truth.caption)
        if i < n_audio:
            audio.append(clip.audio.astype(np.float16))
    return np.stack(mels), captions, (np.stack(audio) if audio else np.zeros((0, CLIP_SAMPLES), np.float16))


def build_dataset(seed: int, n_clips: int, n_audio: int, cache_dir: Path, workers: int | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Log-mels [N, frames, mels] and captions of `n_clips` train clips; waveforms of the first `n_audio`."""
    cache = cache_dir / f"generator-data-s{seed}-n{n_clips}-a{n_audio}.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["mels"], json.loads(str(data["captions"])), data["audio"]
    chunk = 250
    jobs = [(seed, s, min(s + chunk, n_clips), n_audio) for s in range(0, n_clips, chunk)]
    mels, captions, audio = [], [], []
    with Pool(workers or os.cpu_count() or 1) as pool:
        for m, c, a in tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc="render train clips"):
            mels.append(m)
            captions.extend(c)
            audio.append(a)
    mels_arr, audio_arr = np.concatenate(mels), np.concatenate(audio)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")  # a reader in another process never sees half a file
    np.savez(tmp, mels=mels_arr, captions=np.array(json.dumps(captions)), audio=audio_arr)
    tmp.replace(cache)
    return mels_arr, captions, audio_arr


# ----------------------------------------------------------------------------- shared loop pieces
class Stage:
    """Optimiser + cosine schedule + resumable state for one component (AdamW, weight decay 1e-2 except on
    the parameters in `no_decay`).

    Losses are logged one line per step, but read back from the device in blocks of `flush_every`
    steps: a `.item()` per step would make the CPU wait for the GPU on every step."""

    def __init__(self, name: str, model: torch.nn.Module, work_dir: Path, steps: int, lr: float, warmup: int = 100, ema_decay: float | None = None, flush_every: int = 50, no_decay: Sequence[torch.nn.Parameter] = ()) -> None:
        self.name, self.model, self.steps = name, model, steps
        self.device = next(model.parameters()).device
        self.flush_every = flush_every
        self.pending: list[tuple[int, float, dict[str, torch.Tensor]]] = []
        self.started = time.time()
        self.dir = work_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        trained, exempt = [p for p in model.parameters() if p.requires_grad], {id(p) for p in no_decay}
        groups = [{"params": [p for p in trained if id(p) not in exempt]}, {"params": [p for p in trained if id(p) in exempt], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=1e-2)  # one group when nothing is exempt: older states resume
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay else None
        self.ema_decay = ema_decay
        self.step = 0
        self.log = open(self.dir / "log.jsonl", "a")
        state_path = self.dir / "train_state.pt"
        if state_path.is_file():
            state = torch.load(state_path, weights_only=True, map_location=self.device)
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.step = int(state["step"])
            print(f"{name}: resumed from {state_path} at step {self.step}")

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def update(self, loss: torch.Tensor, clip: float = 1.0) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        if self.ema is not None:
            decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)

    def record(self, **values: torch.Tensor) -> dict[str, float] | None:
        """Queue this step's scalars; every `flush_every` steps (and at the end) write them out and
        return the latest values for the progress bar."""
        self.pending.append((self.step, self.sched.get_last_lr()[0], {k: v.detach() for k, v in values.items()}))
        if self.step % self.flush_every == 0 or self.done:
            return self.flush()
        return None

    def flush(self) -> dict[str, float] | None:
        if not self.pending:
            return None
        keys = list(self.pending[0][2])
        table = torch.stack([torch.stack([v[k].float() for k in keys]) for _, _, v in self.pending]).tolist()
        for (step, lr, _), row in zip(self.pending, table):
            self.log.write(json.dumps({"step": step, "lr": lr, **dict(zip(keys, row))}) + "\n")
        self.log.flush()
        self.pending.clear()
        return dict(zip(keys, table[-1]))

    def save_state(self) -> None:
        self.flush()
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "step": torch.tensor(self.step)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        tmp = self.dir / "train_state.tmp"
        torch.save(state, tmp)
        tmp.replace(self.dir / "train_state.pt")

    @property
    def final(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model

    def save_final(self, model, command: str | None, **info) -> None:
        """The finished component as a diffusers/transformers directory, plus what made it (read
        into the assembled generator's MANIFEST)."""
        model.save_pretrained(self.dir / "final")
        record = {"command": command, "steps": self.step, "device": str(self.device), "seconds_this_run": round(time.time() - self.started, 1), **info}
        (self.dir / "final" / STAGE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


STAGE_RECORD = "stage.json"


def show(bar: tqdm, values: dict[str, float] | None) -> None:
    if values:
        bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})


# ----------------------------------------------------------------------------- stage 1: VAE
def train_vae(mels: torch.Tensor, work_dir: Path, steps: int, batch_size: int, seed: int, checkpoint_every: int, device: torch.device, command: str | None = None):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**MINI_VAE).to(device)
    stage = Stage("vae", vae, work_dir, steps, lr=1e-3)
    g = torch.Generator().manual_seed(seed * 1000 + stage.step)
    vae.train()
    bar = tqdm(total=steps, initial=stage.step, desc="train vae")
    while not stage.done:
        x = mels[torch.randint(len(mels), (batch_size,), generator=g)].float()[:, None]
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(generator=g)).sample
        l1 = (recon - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + 1e-4 * kl
        stage.update(loss)
        show(bar, stage.record(l1=l1, kl=kl))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    vae.eval()
    # TANGO scales latents to unit variance for the diffusion model (its 0.9228); measure ours
    with torch.no_grad():
        sample = torch.cat([vae.encode(mels[i : i + 64].float()[:, None]).latent_dist.mean for i in range(0, min(len(mels), 1024), 64)])
    vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    stage.save_final(vae, command, batch_size=batch_size, clips=len(mels))
    return vae


# ----------------------------------------------------------------------------- stage 2: vocoder
def _stft_mag(wav: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=wav.device)
    return torch.stft(wav, n_fft, hop_length=n_fft // 4, window=window, return_complex=True).abs().clamp_min(1e-5)


def vocoder_loss(fake: torch.Tensor, real: torch.Tensor, mel: MelSpectrogram) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Multi-resolution STFT (spectral convergence + log magnitude) and log-mel L1, as in Parallel WaveGAN."""
    sc, mag = 0.0, 0.0
    for n_fft in (256, 512, 1024, 2048):
        f, r = _stft_mag(fake, n_fft), _stft_mag(real, n_fft)
        sc = sc + torch.linalg.norm(r - f) / torch.linalg.norm(r)
        mag = mag + (f.log() - r.log()).abs().mean()
    mel_l1 = (mel.log_magnitude(fake) - mel.log_magnitude(real)).abs().mean()
    loss = sc / 4 + mag / 4 + mel_l1
    return loss, {"sc": sc / 4, "mag": mag / 4, "mel": mel_l1}


def train_vocoder(mels: torch.Tensor, audio: torch.Tensor, work_dir: Path, steps: int, batch_size: int, seed: int, checkpoint_every: int, device: torch.device, command: str | None = None, crop_frames: int = 32):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(seed)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**MINI_VOCODER)).to(device)
    stage = Stage("vocoder", vocoder, work_dir, steps, lr=1e-3)
    loss_mel = MelSpectrogram(MelConfig(n_fft=1024, win_length=1024, hop_length=128, n_mels=64)).to(device)
    hop = MINI_MEL.hop_length
    g = torch.Generator().manual_seed(seed * 1000 + stage.step)
    vocoder.train()
    bar = tqdm(total=steps, initial=stage.step, desc="train vocoder")
    while not stage.done:
        idx = torch.randint(len(audio), (batch_size,), generator=g)
        start = torch.randint(0, MINI_FRAMES - crop_frames, (batch_size,), generator=g)
        x = torch.stack([mels[i, s : s + crop_frames] for i, s in zip(idx.tolist(), start.tolist())]).float()
        # frame k of a centred STFT is centred on sample k*hop: the crop covers [s*hop, (s+crop)*hop) up to half a window
        real = torch.stack([audio[i, s * hop : (s + crop_frames) * hop] for i, s in zip(idx.tolist(), start.tolist())]).float()
        fake = vocoder(x)
        loss, parts = vocoder_loss(fake, real, loss_mel)
        stage.update(loss, clip=10.0)
        show(bar, stage.record(loss=loss, **parts))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    vocoder.eval()
    stage.save_final(vocoder, command, batch_size=batch_size, waveforms=len(audio))
    return vocoder


# ----------------------------------------------------------------------------- stage 3: UNet
@torch.no_grad()
def encode_latents(vae, mels: torch.Tensor, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in tqdm(range(0, len(mels), batch), desc="encode latents"):
        post = vae.encode(mels[i : i + batch].float()[:, None]).latent_dist
        means.append(post.mean.half())
        stds.append(post.std.half())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_captions(text_encoder: TextEncoder, captions: list[str], clause_channels: bool = False, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Text states of every caption (`services.clauses.text_states`, as generation builds them), padded to
    TEXT_MAX_LENGTH, kept on the encoder's device."""
    device = next(text_encoder.encoder.parameters()).device
    width = text_encoder.hidden_size * (2 if clause_channels else 1)
    hidden = torch.zeros(len(captions), TEXT_MAX_LENGTH, width, dtype=torch.float16, device=device)
    mask = torch.zeros(len(captions), TEXT_MAX_LENGTH, dtype=torch.bool, device=device)
    for i in tqdm(range(0, len(captions), batch), desc="encode captions"):
        h, m = text_states(text_encoder, captions[i : i + batch], clause_channels)
        hidden[i : i + len(h), : h.shape[1]] = h.half()
        mask[i : i + len(h), : h.shape[1]] = m.bool()
    return hidden, mask


def min_snr_weight(scheduler, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weight for v-prediction: min(SNR, gamma) / (SNR + 1); gamma 0 means none
    (plain v-MSE, which weighs the noisiest steps, where a clip's layout is decided, far more)."""
    if gamma == 0:
        return torch.ones_like(t, dtype=torch.float32)
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / (snr + 1)


def widen_unet(unet, in_channels: int | None = None, cross_attention_dim: int | None = None):
    """The same UNet taking more input channels and/or wider text states. The new inputs start with zero
    weights (conv_in, and every cross-attention key/value projection), so it computes exactly what it
    did until training teaches it to use them (position channels)."""
    from diffusers import UNet2DConditionModel

    old_in, old_text = unet.config.in_channels, unet.config.cross_attention_dim
    in_channels, cross_attention_dim = in_channels or old_in, cross_attention_dim or old_text
    if (in_channels, cross_attention_dim) == (old_in, old_text):
        return unet
    if in_channels < old_in or cross_attention_dim < old_text:
        raise ValueError(f"cannot narrow a UNet ({old_in} -> {in_channels} input channels, {old_text} -> {cross_attention_dim} text width)")
    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": in_channels, "cross_attention_dim": cross_attention_dim}).to(unet.device, unet.dtype)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], in_channels - old_in, *w.shape[2:])], dim=1)
    for key in [k for k in state if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
        state[key] = torch.cat([state[key], state[key].new_zeros(state[key].shape[0], cross_attention_dim - old_text)], dim=1)
    wide.load_state_dict(state)
    return wide


def with_clause_channels(pipe):
    """`pipe` reading clause channels (services.clauses) through a UNet widened for them with zero weights: it
    generates exactly what it did until training teaches it to read them. A pipeline that has them is returned as is."""
    from diffusers import DDPMScheduler

    from services.generator import TangoPipeline

    if pipe.config.clause_channels:
        return pipe
    unet = widen_unet(pipe.unet, None, pipe.unet.config.cross_attention_dim + pipe.text_encoder.hidden_size)
    config = pipe.config.model_copy(update={"clause_channels": True})
    return TangoPipeline(config, pipe.text_encoder, unet, pipe.vae, pipe.vocoder, DDPMScheduler.from_config(pipe.scheduler_config)).to(pipe.device, pipe.dtype)


def train_unet(latents: tuple[torch.Tensor, torch.Tensor], text: tuple[torch.Tensor, torch.Tensor], empty: tuple[torch.Tensor, torch.Tensor], scaling_factor: float, work_dir: Path, steps: int, batch_size: int, seed: int, checkpoint_every: int, device: torch.device, command: str | None = None, export=None, export_every: int = 0, cfg_dropout: float = 0.1, position_channels: int = 0, init_unet: Path | None = None, lr: float = 4e-4, snr_gamma: float = 5.0, text_position_channels: int = 0):
    """v-prediction with Min-SNR-gamma weights and EMA; from scratch, or from `init_unet`'s weights
    (widened for position channels it lacks) with a fresh optimiser."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    hidden, mask = text
    in_channels = MINI_UNET["in_channels"] + position_channels
    text_width = hidden.shape[-1] + text_position_channels
    if init_unet is not None:
        unet = widen_unet(UNet2DConditionModel.from_pretrained(init_unet), in_channels, text_width).to(device)
    else:
        unet = UNet2DConditionModel(**{**MINI_UNET, "in_channels": in_channels, "cross_attention_dim": text_width}).to(device)
    scheduler = DDPMScheduler(**SCHEDULER)
    stage = Stage("unet", unet, work_dir, steps, lr=lr, warmup=200, ema_decay=0.999)
    mean, std = latents
    g = torch.Generator().manual_seed(seed * 1000 + stage.step)
    unet.train()
    bar = tqdm(total=steps, initial=stage.step, desc="train unet")
    while not stage.done:
        # every random draw comes from the CPU generator, so a run is the same on any device
        idx = torch.randint(len(mean), (batch_size,), generator=g)
        eps = torch.randn(mean[idx].shape, generator=g).to(device)
        z = (mean[idx].float() + std[idx].float() * eps) * scaling_factor
        h, m = hidden[idx].float(), mask[idx]
        drop = (torch.rand(batch_size, generator=g) < cfg_dropout).to(device)
        h, m = torch.where(drop[:, None, None], empty[0].float(), h), torch.where(drop[:, None], empty[1], m)
        noise = torch.randn(z.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=g).to(device)
        noisy = scheduler.add_noise(z, noise, t)
        target = scheduler.get_velocity(z, noise, t)
        pred = unet(with_position_channels(noisy, position_channels), t, encoder_hidden_states=with_token_positions(h, text_position_channels), encoder_attention_mask=m).sample
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weight(scheduler, t, snr_gamma)).mean()
        stage.update(loss)
        show(bar, stage.record(loss=loss, mse=per_sample.mean()))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
        if export is not None and export_every and stage.step % export_every == 0 and not stage.done:
            export(stage.final, stage.step)
    stage.save_final(stage.final, command, batch_size=batch_size, clips=len(mean), cfg_dropout=cfg_dropout, ema_decay=stage.ema_decay, lr=lr, snr_gamma=snr_gamma, position_channels=position_channels, text_position_channels=text_position_channels, init_unet=str(init_unet) if init_unet else None)
    return stage.final, scheduler


# ----------------------------------------------------------------------------- main
STAGES = ("all", "vae", "vocoder", "unet")


def _finished(final_dir: Path, steps: int) -> bool:
    """A component is done when its final directory exists and its train state reached `steps`
    (asking for more steps than it has resumes training from the last state)."""
    state = final_dir.parent / "train_state.pt"
    if not (final_dir / "config.json").is_file():
        return False
    return not state.is_file() or int(torch.load(state, weights_only=True)["step"]) >= steps


def pick_device(device: str | None) -> torch.device:
    """cuda when present unless told otherwise; TF32 matmuls on CUDA (the models stay fp32)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def train_generator(
    out: Path,
    scale: str = "mini",
    seed: int = 0,
    n_clips: int = 20000,
    n_audio: int = 3000,
    vae_steps: int = 800,
    vocoder_steps: int = 800,
    unet_steps: int = 2400,
    batch_size: int = 32,
    work_dir: Path = Path("runs/generator"),
    cache_dir: Path = Path(".cache"),
    checkpoint_every: int = 50,
    export_every: int = 400,
    eval_n: int = 200,
    command: str | None = None,
    stage: str = "all",
    serve_steps: int = 100,
    serve_scheduler: str = "ddpm",
    serve_vocoder: str = "hifigan",
    device: str | None = None,
    workers: int | None = None,
    init: Path | None = None,
    position_channels: int = 0,
    unet_lr: float = 4e-4,
    snr_gamma: float = 5.0,
    text_position_channels: int = 0,
    clause_channels: bool = False,
) -> dict:
    """Train (or resume) the stages `stage` names; with stage "all", assemble, evaluate and write `out`.

    Stages can run as separate processes (vocoder and UNet side by side once the VAE is done); a
    finished component is loaded, not retrained, and the world is rendered only if a stage trains.
    With `init` (a generator directory) its VAE and vocoder are kept and its UNet is trained further."""
    if scale != "mini":
        raise ValueError("only --scale mini trains from scratch here; full-scale TANGO comes from `tta convert-tango`")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if init is not None and stage in ("vae", "vocoder"):
        raise ValueError(f"--init keeps {init}'s {stage}; only the UNet trains further (--stage unet or all)")
    if init is not None and not (init / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{init}: not a generator directory (no unet/config.json)")
    if init is not None and not clause_channels and (init / "pipeline.json").is_file() and json.loads((init / "pipeline.json").read_text()).get("clause_channels"):
        raise ValueError(f"{init}'s UNet reads clause channels; pass --clause-channels to train it further")
    # built first: its validation (e.g. odd --text-position-channels) fails before any training
    config = GeneratorConfig(text_encoder=MINILM, text_max_length=TEXT_MAX_LENGTH, mel=MINI_MEL.to_dict(), default_steps=serve_steps, default_scheduler=serve_scheduler, default_vocoder=serve_vocoder, default_duration_s=CLIP_SAMPLES / MINI_MEL.sample_rate, max_duration_s=10.0, position_channels=position_channels, text_position_channels=text_position_channels, clause_channels=clause_channels)
    commit_at_start = current_commit()
    work_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    t0 = time.time()

    loaded: dict[str, torch.Tensor | list[str]] = {}

    def data() -> tuple[torch.Tensor, list[str], torch.Tensor]:
        if not loaded:
            mels_np, captions, audio_np = build_dataset(seed, n_clips, n_audio, cache_dir, workers)
            loaded.update(mels=torch.from_numpy(mels_np).to(dev), captions=captions, audio=torch.from_numpy(audio_np).to(dev))
            print(f"data: {len(mels_np)} clips, {len(audio_np)} waveforms for the vocoder ({time.time() - t0:.0f} s)")
        return loaded["mels"], loaded["captions"], loaded["audio"]  # type: ignore[return-value]

    vae_dir, vocoder_dir, unet_dir = work_dir / "vae" / "final", work_dir / "vocoder" / "final", work_dir / "unet" / "final"
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan

    vae = vocoder = unet = None
    if init is not None:
        vae_dir, vocoder_dir = init / "vae", init / "vocoder"
    if stage in ("all", "vae", "unet"):  # the UNet learns in the VAE's latent space
        if init is not None or _finished(vae_dir, vae_steps):
            vae = AutoencoderKL.from_pretrained(vae_dir).to(dev).eval()
        elif stage == "unet":
            raise FileNotFoundError(f"{vae_dir}: train the VAE first (--stage vae); the UNet needs its latent space")
        else:
            vae = train_vae(data()[0], work_dir, vae_steps, 16, seed, checkpoint_every, dev, command)
    if stage in ("all", "vocoder"):
        if init is not None or _finished(vocoder_dir, vocoder_steps):
            vocoder = SpeechT5HifiGan.from_pretrained(vocoder_dir).to(dev).eval()
        else:
            mels, _, audio = data()
            vocoder = train_vocoder(mels, audio, work_dir, vocoder_steps, 16, seed, checkpoint_every, dev, command)

    text_encoder = None

    def assemble(unet, directory: Path) -> TangoPipeline:
        pipe = TangoPipeline(config, text_encoder, unet, vae, vocoder, DDPMScheduler(**SCHEDULER)).to(dev)
        pipe.save_pretrained(directory)
        return pipe

    if stage in ("all", "unet"):
        text_encoder = TextEncoder.from_pretrained(MINILM, TEXT_MAX_LENGTH).to(dev)
        if _finished(unet_dir, unet_steps):
            unet = UNet2DConditionModel.from_pretrained(unet_dir).to(dev).eval()
        else:
            mels, captions, _ = data()
            latents = encode_latents(vae, mels)
            text = encode_captions(text_encoder, captions, clause_channels)
            empty_h, empty_m = text_states(text_encoder, [""], clause_channels)
            empty = (torch.zeros(TEXT_MAX_LENGTH, empty_h.shape[-1], device=dev), torch.zeros(TEXT_MAX_LENGTH, dtype=torch.bool, device=dev))
            empty[0][: empty_h.shape[1]], empty[1][: empty_h.shape[1]] = empty_h[0], empty_m[0].bool()

            def export(unet, step: int) -> None:
                if vocoder is None:  # a UNet-only process has no vocoder to assemble a snapshot with
                    return
                assemble(unet, work_dir / "snapshot")
                (work_dir / "snapshot" / "STEP").write_text(f"{step}\n")

            unet, _ = train_unet(latents, text, empty, vae.config.scaling_factor, work_dir, unet_steps, batch_size, seed, checkpoint_every, dev, command, export, export_every, position_channels=position_channels, init_unet=init / "unet" if init else None, lr=unet_lr, snr_gamma=snr_gamma, text_position_channels=text_position_channels)
    if stage != "all":  # one component (re)trained; assemble later with --stage all
        return {}

    pipe = assemble(unet.eval(), out)
    from training.eval_generator import manifest_evaluation

    metrics, evaluation = manifest_evaluation(pipe, eval_n)
    (work_dir / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    stages = {name: json.loads((work_dir / name / "final" / STAGE_RECORD).read_text()) for name in ("vae", "vocoder", "unet") if (work_dir / name / "final" / STAGE_RECORD).is_file()}
    if init is not None and (init / MANIFEST).is_file():  # the kept components were trained by the init's run
        init_stages = json.loads((init / MANIFEST).read_text()).get("training", {}).get("stages", {})
        stages = {**{k: v for k, v in init_stages.items() if k in ("vae", "vocoder")}, **stages}
    write_manifest(
        out,
        command=command,
        seed=seed,
        metrics=metrics,
        git_commit=commit_at_start,
        extra={
            "training": {"n_clips": n_clips, "n_audio": n_audio, "vae_steps": vae_steps, "vocoder_steps": vocoder_steps, "unet_steps": unet_steps, "batch_size": batch_size, "unet_lr": unet_lr, "snr_gamma": snr_gamma, "position_channels": position_channels, "text_position_channels": text_position_channels, "clause_channels": clause_channels, "text_encoder": MINILM, "init": checkpoint_version(init) if init else None, "stages": stages},
            "evaluation": evaluation,
        },
    )
    return metrics
