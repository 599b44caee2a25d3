"""Generator benchmark: one run, identical weights, same machine. Prints a Markdown table.

    python benchmarks/generator.py [--checkpoint DIR] [--steps 50] [--repeats 5] [--device cpu|cuda]

1. Our pipeline vs. a plain diffusers denoising loop written the way the diffusers docs show it
   (time per clip; goal: ratio <= 1.0).
2. N=4 candidates vs. N=1 for one prompt (wall time; goal <= 2.5x on CPU): batching the candidates.
   Also the cost of a timeline (the prompt states a sequence): the same call with it on and off.
3. UNet achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode) vs. this machine's measured
   fp32 matmul GFLOP/s: how much of the hardware the model uses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from services.generator import DTYPES, TangoPipeline, make_scheduler, with_position_channels, with_token_positions  # noqa: E402

PROMPT = "a dog barks, then a bell rings"


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_interleaved(fns: dict[str, Callable[[], object]], repeats: int, sync) -> dict[str, float]:
    """Median wall time of each call, the calls taken in turn every round: a ratio between two of them
    then compares runs that saw the same moments of this shared machine's load."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def plain_diffusers_loop(pipe: TangoPipeline, prompt: str, n: int, steps: int, guidance: float, seed: int):
    """The textbook loop: encode, cat [uncond, cond], UNet, guidance, scheduler.step, VAE decode, vocoder."""
    tok, enc = pipe.text_encoder.tokenizer, pipe.text_encoder.encoder
    batch = tok([""] * n + [prompt] * n, padding=True, return_tensors="pt").to(pipe.device)
    states = with_token_positions(enc(**batch).last_hidden_state.to(pipe.dtype), pipe.config.text_position_channels)
    scheduler = make_scheduler("ddpm", pipe.scheduler_config)
    scheduler.set_timesteps(steps, device=pipe.device)
    frames = pipe.num_frames(pipe.config.default_duration_s)
    shape = (n, pipe.vae.config.latent_channels, frames // pipe.vae_scale, pipe.mel.n_mels // pipe.vae_scale)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(pipe.device, pipe.dtype) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = with_position_channels(scheduler.scale_model_input(torch.cat([latents] * 2), t), pipe.config.position_channels)
        uncond, cond = pipe.unet(x, t, encoder_hidden_states=states, encoder_attention_mask=batch["attention_mask"]).sample.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    mel = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return pipe.vocode(mel[:, 0])  # the pipeline's own vocoder: the loops are what is compared


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = timed(lambda: a @ b, repeats, sync)
    return 2 * size**3 / seconds / 1e9


def unet_gflops(pipe: TangoPipeline, batch: int, repeats: int, sync) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    frames = pipe.num_frames(pipe.config.default_duration_s)
    x = torch.randn(batch, pipe.unet.config.in_channels, frames // pipe.vae_scale, pipe.mel.n_mels // pipe.vae_scale, device=pipe.device, dtype=pipe.dtype)
    states = torch.randn(batch, 16, pipe.unet.config.cross_attention_dim, device=pipe.device, dtype=pipe.dtype)
    t = torch.tensor(500, device=pipe.device)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            pipe.unet(x, t, encoder_hidden_states=states)
        flops = counter.get_total_flops()
        seconds = timed(lambda: pipe.unet(x, t, encoder_hidden_states=states), repeats, sync)
    return flops / 1e9, flops / seconds / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="generator directory (default: the shipped mini default)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=list(DTYPES), default=None)
    args = ap.parse_args()
    from services.checkpoints import shipped

    dtype = DTYPES[args.dtype] if args.dtype else None
    pipe = TangoPipeline.from_pretrained(args.checkpoint or shipped("generator"), device=args.device, dtype=dtype)
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
    g = pipe.config.default_guidance_scale
    rows = []

    def ours(n: int, timeline: bool):
        return lambda: pipe.generate([PROMPT], num_candidates=n, steps=args.steps, scheduler="ddpm", seed=0, timeline=timeline)

    # the textbook loop has no timeline, so the like-for-like comparisons run without one
    t = timed_interleaved(
        {"ours4": ours(4, False), "plain4": lambda: plain_diffusers_loop(pipe, PROMPT, 4, args.steps, g, 0), "ours1": ours(1, False), "timeline4": ours(4, True)},
        args.repeats,
        sync,
    )
    rows.append(("pipeline vs plain diffusers loop (N=4, s/clip)", f"{t['ours4'] / 4:.3f} vs {t['plain4'] / 4:.3f}", f"{t['ours4'] / t['plain4']:.2f}x", "<= 1.0"))
    rows.append(("N=4 vs N=1 wall time (s)", f"{t['ours4']:.2f} vs {t['ours1']:.2f}", f"{t['ours4'] / t['ours1']:.2f}x", "<= 2.5x (CPU)"))
    rows.append(("timeline on vs off (N=4, s)", f"{t['timeline4']:.2f} vs {t['ours4']:.2f}", f"{t['timeline4'] / t['ours4']:.2f}x", "info"))

    gflop, achieved = unet_gflops(pipe, 8, args.repeats, sync)
    peak = matmul_gflops(pipe.device, pipe.dtype)
    rows.append(("UNet forward, batch 8 (CFG x N=4)", f"{gflop:.1f} GFLOP, {achieved:.1f} GFLOP/s", f"{achieved / peak:.0%} of matmul", "info"))
    rows.append(("matmul 2048^2 (this machine)", f"{peak:.1f} GFLOP/s", "", "info"))

    print(f"device {pipe.device} ({torch.cuda.get_device_name() if pipe.device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), dtype {pipe.dtype}, {args.steps} DDPM steps, guidance {g}, {pipe.config.default_duration_s} s clips, median of {args.repeats} (the four generate calls interleaved)")
    print()
    print("| measurement | value | ratio | goal |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
