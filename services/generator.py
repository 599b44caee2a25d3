"""The TANGO pipeline: text encoder -> UNet denoising loop (CFG) -> VAE decoder -> HiFi-GAN vocoder.

The vocoder step can instead run Griffin-Lim phase retrieval on the decoded mel (no weights; the
`default_vocoder` of the pipeline config, or per call): the mini HiFi-GAN loses steady high tones.

Components are diffusers/transformers classes built from configs in a directory laid out like a
diffusers pipeline:

    pipeline.json            GeneratorConfig (text encoder location, mel settings, serving defaults)
    text_encoder/            transformers encoder + tokenizer (absent when the config names a package)
    unet/ vae/               diffusers UNet2DConditionModel, AutoencoderKL
    vocoder/                 transformers SpeechT5HifiGan (the layout diffusers' AudioLDM uses)
    scheduler/               scheduler_config.json (SD-2.1 DDPM, v-prediction)
    MANIFEST.json            for shipped checkpoints: sha256 of every file, command, seed, metrics

The N candidates of every prompt and both guidance branches go through the UNet in one batch. Each
candidate draws its noise from its own seeded generator, so a candidate's audio depends on its
prompt, seed and settings, not on what else was in the batch.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.audio import GriffinLimVocoder, MelConfig, MelSpectrogram, limit_peaks
from services.clauses import text_states
from services.manifest import MANIFEST, verify_manifest
from services.modeling import CheckpointError
from services.text_encoder import PACKAGE_PREFIX, TextEncoder
from services.timeline import Segment, TimelineAttnProcessor, TimelineMask, parse_timeline, token_time_mask

PIPELINE_CONFIG = "pipeline.json"
SchedulerName = Literal["ddpm", "ddim", "dpm++"]
SCHEDULERS: tuple[str, ...] = ("ddpm", "ddim", "dpm++")
VocoderName = Literal["hifigan", "griffin-lim"]
VOCODERS: tuple[str, ...] = ("hifigan", "griffin-lim")


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_encoder: str = "text_encoder"  # a subdirectory, or package:NAME for an installed model package
    text_max_length: int = Field(512, ge=1)
    mel: dict = Field(default_factory=lambda: MelConfig().to_dict())
    # serving defaults: TANGO's (DDPM, guidance 3) unless a measurement picked others
    default_scheduler: SchedulerName = "ddpm"
    default_steps: int = Field(200, ge=1, le=1000)
    default_guidance_scale: float = Field(3.0, ge=0)
    default_duration_s: float = Field(10.0, gt=0)
    # what turns the decoded mel into audio: the trained HiFi-GAN in vocoder/ (TANGO's), or
    # Griffin-Lim, which has no weights and keeps everything the mel holds (services.audio)
    default_vocoder: VocoderName = "hifigan"
    max_duration_s: float = Field(30.0, gt=0)
    # maps of relative time (and mel band) appended to the UNet input: a convolutional UNet has no
    # other sense of where in the clip it is, and "a, then b" needs it. 0 for TANGO's own UNets.
    position_channels: int = Field(0, ge=0, le=2)
    # sinusoids of the token index appended to the text states: MiniLM's states are trained for mean
    # pooling and barely say where a word stands (same word, other position: cosine 0.97-0.99), so
    # "a, then b" and "b, then a" look alike to cross-attention. 0 for TANGO (T5 keeps position).
    text_position_channels: int = Field(0, ge=0, le=64, multiple_of=2)
    # prompts that state a sequence ("a, then b") give each clause its own stretch of the clip through
    # cross-attention masks (services.timeline); off for TANGO unless a measurement turns it on
    default_timeline: bool = False
    # each token also carries its clause's mean-pooled text state (services.clauses): pooled MiniLM places
    # paraphrases together, so an event named by unseen words still reads as that event. Off for TANGO.
    clause_channels: bool = False

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig.from_dict(self.mel)


def with_position_channels(latents: torch.Tensor, channels: int) -> torch.Tensor:
    """Latents [B, C, time, mel] with `channels` coordinate maps appended: relative time from -1 (clip
    start) to 1 (clip end), then relative mel band. Relative, so "first a, then b" means the same at
    any duration."""
    if channels == 0:
        return latents
    b, _, t, f = latents.shape
    time_map = torch.linspace(-1, 1, t, device=latents.device, dtype=latents.dtype)[:, None].expand(t, f)
    band_map = torch.linspace(-1, 1, f, device=latents.device, dtype=latents.dtype)[None, :].expand(t, f)
    maps = torch.stack([time_map, band_map][:channels])
    return torch.cat([latents, maps.expand(b, -1, -1, -1)], dim=1)


def with_token_positions(states: torch.Tensor, channels: int) -> torch.Tensor:
    """Text states [B, L, D] with `channels` sinusoids of the token index appended (periods from ~6
    to ~350 tokens, as in the Transformer's position encoding with base 100)."""
    if channels == 0:
        return states
    b, length, _ = states.shape
    index = torch.arange(length, device=states.device, dtype=torch.float32)[:, None]
    freq = 100.0 ** (-torch.arange(0, channels, 2, device=states.device, dtype=torch.float32) / channels)
    angles = index * freq  # [L, channels / 2]
    table = torch.cat([angles.sin(), angles.cos()], dim=1).to(states.dtype)
    return torch.cat([states, table.expand(b, -1, -1)], dim=2)


class GenerationTimeout(TimeoutError):
    """The generation's deadline passed between two denoising steps; the work so far is dropped."""


@dataclass
class GenerationOutput:
    waveforms: np.ndarray  # float32 [prompts, candidates, samples]
    seeds: list[list[int]]  # [prompts][candidates]
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    # per prompt: the clauses in the order they were placed in the clip, or None (no timeline used)
    timelines: list[list[str] | None] = field(default_factory=list)
    # float16 [prompts, candidates, C, T, F] when asked for (return_latents): the denoised latents as the UNet
    # made them (scaled), before decoding; training on a model's own samples uses these instead of re-encoding
    # vocoded audio
    latents: np.ndarray | None = None


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of the named kind from the pipeline's (DDPM, v-prediction) scheduler config."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name == "ddpm":
        return DDPMScheduler.from_config(config)
    if name == "ddim":
        return DDIMScheduler.from_config(config, set_alpha_to_one=False)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def candidate_seeds(seed: int | list[int] | None, num_prompts: int, num_candidates: int) -> list[list[int]]:
    """Seeds per prompt and candidate: candidate j of a prompt with seed s uses s + j."""
    if seed is None:
        seed = secrets.randbelow(2**31)
    bases = [seed] * num_prompts if isinstance(seed, int) else list(seed)
    if len(bases) != num_prompts:
        raise ValueError(f"got {len(bases)} seeds for {num_prompts} prompts")
    return [[int(b) + j for j in range(num_candidates)] for b in bases]


# short precision names, as the CLI and the benchmarks take them
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX-512 BF16 or AMX tiles): only then is bf16
    faster than fp32 here; elsewhere torch emulates it and it is slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def default_dtype(device: str | torch.device) -> torch.dtype:
    """UNet/VAE precision when nobody asks for one: fp16 on CUDA; bf16 on a CPU that computes it natively,
    where the mini default generated 1.66x faster at batch 16 with the same oracle accuracy
    (docs/results/generator/bf16); fp32 on other CPUs."""
    if torch.device(device).type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_computes_bf16() else torch.float32


class TangoPipeline:
    def __init__(self, config: GeneratorConfig, text_encoder: TextEncoder, unet, vae, vocoder, scheduler) -> None:
        self.config = config
        self.text_encoder, self.unet, self.vae, self.vocoder = text_encoder, unet.eval(), vae.eval(), vocoder.eval()
        # the same attention as diffusers' default, plus timeline masks when a call passes them
        self.unet.set_attn_processor(TimelineAttnProcessor())
        self.scheduler_config = dict(scheduler.config)
        self.mel = config.mel_config
        self.griffin_lim = GriffinLimVocoder(self.mel)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._check_shapes()

    # ------------------------------------------------------------------ structure
    def _check_shapes(self) -> None:
        unet_c, vae_c, voc_c = self.unet.config, self.vae.config, self.vocoder.config
        problems = []
        wanted_in = vae_c.latent_channels + self.config.position_channels
        if unet_c.in_channels != wanted_in or unet_c.out_channels != vae_c.latent_channels:
            problems.append(f"UNet channels {unet_c.in_channels}->{unet_c.out_channels} != VAE latent channels {vae_c.latent_channels} (+ {self.config.position_channels} position channels in)")
        if unet_c.cross_attention_dim != self.text_width + self.config.text_position_channels:
            clauses = " x 2 for clause channels" if self.config.clause_channels else ""
            problems.append(f"UNet cross_attention_dim {unet_c.cross_attention_dim} != text encoder width {self.text_encoder.hidden_size}{clauses} (+ {self.config.text_position_channels} text position channels)")
        if voc_c.model_in_dim != self.mel.n_mels:
            problems.append(f"vocoder takes {voc_c.model_in_dim} mel bins, pipeline mel has {self.mel.n_mels}")
        if int(np.prod(voc_c.upsample_rates)) != self.mel.hop_length:
            problems.append(f"vocoder upsamples {int(np.prod(voc_c.upsample_rates))}x, mel hop is {self.mel.hop_length}")
        if problems:
            raise CheckpointError("generator components do not fit together: " + "; ".join(problems))

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def frame_multiple(self) -> int:
        """Mel frames must be a multiple of this: VAE downsampling x UNet downsampling."""
        return self.vae_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> TangoPipeline:
        """Move to a device. UNet and VAE take `dtype` (default_dtype chooses one); the text encoder stays
        fp32 (T5 overflows in fp16) and the vocoder stays fp32 for clean audio."""
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        for model in (self.unet, self.vae):
            model.to(self.device) if model.dtype == self.dtype else model.to(self.device, self.dtype)
        self.text_encoder.to(self.device)
        self.vocoder.to(self.device)
        self.griffin_lim.to(self.device)
        return self

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> TangoPipeline:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import SpeechT5HifiGan

        directory = Path(directory)
        if not (directory / PIPELINE_CONFIG).is_file():
            raise CheckpointError(f"{directory}: not a generator directory (no {PIPELINE_CONFIG})")
        if (directory / MANIFEST).is_file():
            verify_manifest(directory)
        try:
            config = GeneratorConfig.model_validate(json.loads((directory / PIPELINE_CONFIG).read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise CheckpointError(f"{directory / PIPELINE_CONFIG}: invalid generator config: {exc}") from exc
        for sub in ("unet", "vae", "vocoder", "scheduler"):
            if not (directory / sub).is_dir():
                raise CheckpointError(f"{directory}: missing component directory {sub}/")
        text_encoder = TextEncoder.from_pretrained(config.text_encoder, config.text_max_length, base=directory)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype is None:
            dtype = default_dtype(device)
        unet = UNet2DConditionModel.from_pretrained(directory / "unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(directory / "vae", torch_dtype=dtype)
        vocoder = SpeechT5HifiGan.from_pretrained(directory / "vocoder")
        scheduler = make_scheduler("ddpm", json.loads((directory / "scheduler" / "scheduler_config.json").read_text()))
        pipe = cls(config, text_encoder, unet, vae, vocoder, scheduler)
        return pipe.to(device, dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        from diffusers import DDPMScheduler

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PIPELINE_CONFIG).write_text(self.config.model_dump_json(indent=2) + "\n")
        if not self.config.text_encoder.startswith(PACKAGE_PREFIX):
            self.text_encoder.encoder.save_pretrained(directory / self.config.text_encoder)
            self.text_encoder.tokenizer.save_pretrained(directory / self.config.text_encoder)
        self.unet.save_pretrained(directory / "unet")
        self.vae.save_pretrained(directory / "vae")
        self.vocoder.save_pretrained(directory / "vocoder")
        DDPMScheduler.from_config(self.scheduler_config).save_pretrained(directory / "scheduler")
        return directory

    # ------------------------------------------------------------------ generation
    def num_frames(self, duration_s: float) -> int:
        frames = int(np.ceil(duration_s * self.sample_rate / self.mel.hop_length))
        m = self.frame_multiple
        return max(m, -(-frames // m) * m)

    @property
    def text_width(self) -> int:
        """Channels of `encode_text`'s states: the encoder's, twice that with clause channels."""
        return self.text_encoder.hidden_size * (2 if self.config.clause_channels else 1)

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen text states the UNet reads [B, L, text_width] (before token positions) and the mask [B, L];
        training encodes its captions here too, so it sees what generation gives the UNet."""
        return text_states(self.text_encoder, texts, self.config.clause_channels)

    def _encode(self, prompts: list[str], negative: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """[uncond/negative ; cond] text states and masks, padded to one length."""
        h, m = self.encode_text(negative + prompts)
        return h.to(self.dtype), m.to(self.device)

    def token_visibility(self, texts: list[str], segments: list[list[Segment] | None], frames: int) -> torch.Tensor:
        """[B, tokens, frames] bool: which tokens of each text's encoder states each latent frame may attend
        to under its timeline (every token everywhere for a text without one). BATON training uses it too."""
        spans = self.text_encoder.token_spans(texts)
        return torch.stack([token_time_mask(spans[i], seg, frames) for i, seg in enumerate(segments)])

    def _timeline_mask(self, prompts: list[str], negatives: list[str], segments: list[list[Segment] | None], frames: int, num_candidates: int) -> TimelineMask:
        """Token visibility per UNet row ([uncond ; cond], each repeated per candidate): negatives see all their tokens."""
        visible = self.token_visibility(negatives + prompts, [None] * len(negatives) + segments, frames)
        return TimelineMask(visible.repeat_interleave(num_candidates, 0), self.mel.n_mels // self.vae_scale)

    def decode(self, latents: torch.Tensor, vocoder: str | None = None) -> torch.Tensor:
        """Latents [B, C, T/s, F/s] -> waveforms [B, T * hop] (float32)."""
        mel = self.vae.decode(latents / self.vae.config.scaling_factor).sample  # [B, 1, T, F]
        return self.vocode(mel[:, 0], vocoder)

    def vocode(self, mel: torch.Tensor, vocoder: str | None = None) -> torch.Tensor:
        """Log-magnitude mel [B, T, F] -> waveforms [B, T * hop] with the named vocoder (default: the config's)."""
        return self.griffin_lim(mel) if self.vocoder_name(vocoder) == "griffin-lim" else self.vocoder(mel.float())

    def vocoder_name(self, vocoder: str | None = None) -> str:
        """The vocoder a call uses: the one it names, else the config's default; unknown names fail."""
        name = vocoder or self.config.default_vocoder
        if name not in VOCODERS:
            raise ValueError(f"unknown vocoder {name!r}; choose one of {', '.join(VOCODERS)}")
        return name

    @torch.no_grad()
    def reconstruct(self, waveforms: np.ndarray, through_vae: bool = True, vocoder: str | None = None) -> np.ndarray:
        """Waveforms [B, samples] through this pipeline's own audio path: log-mel -> (VAE encode (mode),
        decode) -> vocoder, back at the input length. Audio whose content is known, with this codec's sound."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        n = waveforms.shape[-1]
        frames = self.num_frames(n / self.sample_rate)
        mel = MelSpectrogram(self.mel).log_magnitude(torch.from_numpy(waveforms)).transpose(1, 2)  # [B, frames, mels]
        mel = torch.nn.functional.pad(mel[:, :frames], (0, 0, 0, max(0, frames - mel.shape[1])), value=float(np.log(self.mel.log_floor)))
        mel = mel.to(self.device)
        if through_vae:
            latents = self.vae.encode(mel[:, None].to(self.dtype)).latent_dist.mode() * self.vae.config.scaling_factor
            wav = self.decode(latents, vocoder)
        else:
            wav = self.vocode(mel, vocoder)
        wav = wav.float().cpu().numpy()[:, :n]
        return np.pad(wav, ((0, 0), (0, n - wav.shape[1])))

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str] | str,
        num_candidates: int = 1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        seed: int | list[int] | None = None,
        duration_s: float | None = None,
        scheduler: str | None = None,
        progress: bool = False,
        deadline: float | None = None,
        vocoder: str | None = None,
        timeline: bool | None = None,
        return_latents: bool = False,
    ) -> GenerationOutput:
        """Waveforms [prompts, N, samples]; `deadline` (a time.time() value) stops the work between two
        denoising steps with GenerationTimeout, so nobody computes audio no one waits for any more.
        `timeline` (default: the config's) places the clauses of prompts that state a sequence in
        successive stretches of the clip (services.timeline); other prompts are unaffected.
        `return_latents` also copies the denoised latents to the host (`GenerationOutput.latents`), for
        training on the model's own samples; serving has no use for them."""
        cfg = self.config
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        steps = steps or cfg.default_steps
        guidance_scale = cfg.default_guidance_scale if guidance_scale is None else guidance_scale
        duration_s = duration_s or cfg.default_duration_s
        scheduler_name = scheduler or cfg.default_scheduler
        vocoder_name = self.vocoder_name(vocoder)
        if not prompts:
            raise ValueError("no prompts")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if not 0 < duration_s <= cfg.max_duration_s:
            raise ValueError(f"duration_s must be in (0, {cfg.max_duration_s}], got {duration_s}")
        if not 1 <= steps <= 1000:
            raise ValueError(f"steps must be in [1, 1000], got {steps}")
        negatives = [negative_prompt or ""] * len(prompts) if not isinstance(negative_prompt, list) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        seeds = candidate_seeds(seed, len(prompts), num_candidates)
        use_timeline = cfg.default_timeline if timeline is None else bool(timeline)
        segments = [parse_timeline(p) for p in prompts] if use_timeline else [None] * len(prompts)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        use_cfg = guidance_scale != 1.0
        # rows [negatives..., prompts...], each repeated once per candidate: the UNet batch is [uncond ; cond]
        h, m = self._encode(prompts, negatives)
        h = with_token_positions(h, cfg.text_position_channels)
        h, m = h.repeat_interleave(num_candidates, 0), m.repeat_interleave(num_candidates, 0)
        n = len(prompts) * num_candidates
        text_states, text_mask = (h, m) if use_cfg else (h[n:], m[n:])
        timings["encode_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        frames = self.num_frames(duration_s)
        shape = (self.vae.config.latent_channels, frames // self.vae_scale, self.mel.n_mels // self.vae_scale)
        # starting noise from CPU generators (the same on every device); the per-step noise of
        # DDPM/DDIM from generators on the pipeline's device, so no step waits on a host copy
        latents = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for row in seeds for s in row]).to(self.device, self.dtype)
        generators = [torch.Generator(self.device).manual_seed(s) for row in seeds for s in row]
        sched = make_scheduler(scheduler_name, self.scheduler_config)
        sched.set_timesteps(steps, device=self.device)
        latents = latents * sched.init_noise_sigma
        extra = {"generator": generators} if scheduler_name in ("ddpm", "ddim") else {}
        attention_kwargs = None
        if any(segments):
            tl = self._timeline_mask(prompts, negatives, segments, shape[1], num_candidates)
            attention_kwargs = {"timeline": tl if use_cfg else TimelineMask(tl.visible[n:], tl.bins)}
        iterator = sched.timesteps
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="denoise", leave=False)
        for t in iterator:
            if deadline is not None and time.time() > deadline:
                raise GenerationTimeout(f"deadline passed after {time.perf_counter() - t0:.2f} s of denoising ({steps} steps asked)")
            x = torch.cat([latents, latents]) if use_cfg else latents
            x = with_position_channels(sched.scale_model_input(x, t), cfg.position_channels)
            out = self.unet(x, t, encoder_hidden_states=text_states, encoder_attention_mask=text_mask, cross_attention_kwargs=attention_kwargs).sample
            if use_cfg:
                uncond, cond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            latents = sched.step(out, t, latents, **extra).prev_sample
        timings["denoise_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        wav = self.decode(latents, vocoder_name)
        samples = int(round(duration_s * self.sample_rate))
        # the waveform every consumer gets (judges, reranker, files): level-limited, never clipped on encoding
        wav = limit_peaks(wav[:, :samples].float().cpu().numpy()).reshape(len(prompts), num_candidates, -1)
        timings["decode_s"] = time.perf_counter() - t0
        settings = {"steps": steps, "guidance_scale": guidance_scale, "scheduler": scheduler_name, "duration_s": duration_s, "vocoder": vocoder_name, "timeline": use_timeline, "dtype": str(self.dtype).removeprefix("torch.")}
        timelines = [[s.text for s in seg] if seg else None for seg in segments]
        stored = latents.detach().to("cpu", torch.float16).numpy().reshape(len(prompts), num_candidates, *latents.shape[1:]) if return_latents else None
        return GenerationOutput(np.ascontiguousarray(wav, dtype=np.float32), seeds, self.sample_rate, timings, settings, timelines, stored)
