"""`tta train baton`: fine-tune a generator's UNet on human (or simulated) feedback, as BATON does.

    L = beta * E_pretrain[ w(t) ||v_hat - v||^2 ]  +  E_feedback[ r * w(t) ||v_hat - v||^2 ]

The pretraining term keeps the model on ground-truth clips of the world (BATON used 2.5k AudioCaps
clips); the feedback term trains on generated clips, each weighted by r: its 0/1 label ("HD", from
`tta data build` or imported human labels) or the reward model's score ("RD", for clips built with
`--label none`). A clip with r = 0 contributes nothing: the feedback term only pulls the model towards
what people accepted. w(t) is Min-SNR (gamma 5) for v-prediction; the text encoder, VAE and vocoder
are frozen, so only the UNet changes. A generator that serves timelines (`default_timeline`) is
fine-tuned with them: every caption that states a sequence gets the same cross-attention mask over time
that generation gives it (services.timeline), so training and generation see the UNet the same way.
With no feedback directories the pretraining term trains alone (the "pretrain" ablation row of
`tta eval baton`); `pretrain_teacher_share` captions that share of the ground-truth clips with teacher
words for their events (never held-out words), so the pretraining term can carry wording too.

Reads top to bottom: data (clips -> log-mel -> VAE latents, texts -> frozen text states, all once),
model (the init generator's UNet), loop (both terms in one UNet batch; resumable `Stage`, progress bar,
periodic checkpoints), output (the init generator with the new UNet, and a MANIFEST naming the base,
the data, the command and the metrics). Any generator directory works, the mini default or a real
TANGO converted by `tta convert-tango`: everything is read from the pipeline's own configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from services.audio import MelSpectrogram, read_audio
from services.generator import TangoPipeline, with_position_channels, with_token_positions
from services.manifest import MANIFEST, checkpoint_version, current_commit, write_manifest
from services.timeline import TimelineMask, parse_timeline
from training.train_generator import Stage, min_snr_weight, pick_device, show, with_clause_channels
from training.world.clips import Task

CFG_DROPOUT = 0.1  # on the pretraining half only: keeps the unconditional branch guidance needs
TRAINING_LOG = "baton_log.jsonl"  # per step: loss, pretrain and feedback terms, lr


@dataclass
class LatentSet:
    """Clips as VAE posteriors plus their texts' frozen encoder states, and a weight per clip."""

    mean: torch.Tensor  # [N, C, T, F] (fp16)
    std: torch.Tensor
    hidden: torch.Tensor  # [N, L, D] (fp16)
    mask: torch.Tensor  # [N, L] bool
    weight: torch.Tensor  # [N] float: r for feedback clips, 1 for pretraining clips
    visible: torch.Tensor  # [N, L, T] bool: may latent frame t attend to token l (all True without a timeline)

    def __len__(self) -> int:
        return len(self.mean)

    def padded(self, length: int) -> LatentSet:
        """Text states padded (masked) to `length` tokens, so two sets share one UNet batch."""
        extra = length - self.hidden.shape[1]
        return LatentSet(self.mean, self.std, F.pad(self.hidden, (0, 0, 0, extra)), F.pad(self.mask, (0, extra)), self.weight, F.pad(self.visible, (0, 0, 0, extra), value=True))


# ----------------------------------------------------------------------------- data
def own_latents(directory: Path, paths: list[Path], generator_version: str | None) -> list[torch.Tensor | None]:
    """Per clip, the latent the generator itself denoised when it built the dataset, when that generator is
    `generator_version` (the init being fine-tuned) and the set stored them; None means: re-encode the
    audio. Stored latents skip the vocoder -> mel -> VAE round trip, so the feedback term's targets are the
    model's own samples rather than their vocoded copies."""
    from training.build_dataset import sampling_settings, stored_latents

    if generator_version is None or sampling_settings(directory).get("generator") != generator_version:
        return [None] * len(paths)
    stored = stored_latents(directory)
    return [stored.get(p.relative_to(directory).as_posix()) for p in paths]


def targets_described(found: list[torch.Tensor | None]) -> str:
    """What one feedback set trains on, for its MANIFEST entry."""
    stored = sum(z is not None for z in found)
    return "stored latents" if stored == len(found) else "re-encoded audio" if stored == 0 else f"stored latents for {stored} of {len(found)}"


def feedback_clips(hd_dirs: list[Path], rd_dirs: list[Path], reward_model_dir: Path | None, generator_version: str | None = None, hard_prompt_share: float = 1.0) -> tuple[list[str], list[Path], np.ndarray, dict, list[torch.Tensor | None]]:
    """(prompts, audio paths, r, description, own latents) of every feedback clip: HD dirs carry labels
    (records.jsonl), RD dirs are scored by the reward model (clips.jsonl); own latents as `own_latents`.
    hard_prompt_share < 1 keeps, of each set, only its hardest prompts (`hardest_prompts`)."""
    from training.build_dataset import load_dataset_records, sampling_settings

    prompts: list[str] = []
    paths: list[Path] = []
    weights: list[float] = []
    latents: list[torch.Tensor | None] = []
    described = {"hd": [], "rd": []}

    def add(kind: str, d: Path, set_prompts: list[str], set_paths: list[Path], r: np.ndarray, about: dict) -> None:
        about = {"dir": str(d), "clips": len(set_prompts), **about}
        if hard_prompt_share < 1:
            keep = hardest_prompts(set_prompts, r, hard_prompt_share)
            set_prompts, set_paths, r = [q for q, k in zip(set_prompts, keep) if k], [p for p, k in zip(set_paths, keep) if k], r[keep]
            about["hardest_prompts"] = {"share": hard_prompt_share, "prompts": len(set(set_prompts)), "clips": len(set_prompts), "mean_r": round(float(r.mean()), 4)}
        found = own_latents(d, set_paths, generator_version)
        prompts.extend(set_prompts)
        paths.extend(set_paths)
        weights.extend(r.tolist())
        latents.extend(found)
        described[kind].append({**about, "sampling": sampling_settings(d), "targets": targets_described(found)})

    for d in hd_dirs:
        pairs = load_dataset_records(d)
        labels = np.asarray([float(r.label) for r, _ in pairs], np.float32)
        add("hd", d, [r.prompt for r, _ in pairs], [p for _, p in pairs], labels, {"accepted": int(labels.sum())})
    if rd_dirs:
        if reward_model_dir is None:
            raise ValueError("--reward-data needs a reward model to score its clips (--reward-model DIR)")
        from services.reward import RewardModel

        model = RewardModel.from_pretrained(reward_model_dir, "cpu")
        for d in rd_dirs:
            rows = [json.loads(line) for line in (Path(d) / "clips.jsonl").read_text().splitlines() if line.strip()]
            if not rows:
                raise ValueError(f"{d}: clips.jsonl lists no clips")
            clip_paths = [Path(d) / r["audio"] for r in rows]
            rewards = []
            for s in tqdm(range(0, len(rows), 64), desc=f"reward-score {Path(d).name}"):
                chunk = rows[s : s + 64]
                audio = np.stack([read_audio(p, model.clap.sample_rate) for p in clip_paths[s : s + 64]])
                rewards.append(model.score_pairs([r["prompt"] for r in chunk], audio, model.clap.sample_rate))
            r = np.concatenate(rewards).astype(np.float32)
            add("rd", d, [row["prompt"] for row in rows], clip_paths, r, {"mean_reward": round(float(r.mean()), 4), "reward_model": checkpoint_version(reward_model_dir)})
    return prompts, paths, np.asarray(weights, np.float32), described, latents


def hardest_prompts(prompts: list[str], weights: np.ndarray, share: float) -> np.ndarray:
    """Which rows of one feedback set to keep: the clips of the `share` of its prompts with the lowest mean r
    over their clips (ties keep their order of appearance). A prompt the init gets right almost every time
    teaches it little; a rank within the set (not a threshold on r) keeps the rule the same for 0/1 labels
    and for a reward head's scores, whatever the head's calibration."""
    if not 0 < share <= 1:
        raise ValueError(f"the hard-prompt share must be in (0, 1], got {share}")
    by_prompt: dict[str, list[int]] = {}
    for i, q in enumerate(prompts):
        by_prompt.setdefault(q, []).append(i)
    ranked = sorted(by_prompt, key=lambda q: float(np.mean(weights[by_prompt[q]])))
    keep = np.zeros(len(prompts), dtype=bool)
    for q in ranked[: max(1, round(share * len(ranked)))]:
        keep[by_prompt[q]] = True
    return keep


def world_clips(n: int, seed: int, teacher_share: float = 0.0, teacher_words: dict[str, list[str]] | None = None, task: Task | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Ground-truth train clips of the world and their captions (the pretraining term's data). A
    `teacher_share` of them name their events by teacher words (`training.teacher_words`, computed when not
    given) instead of the world's training phrasings: the same sounds under words the captions never use,
    never held-out ones. `task` draws every clip of one task ("single": one event, none of the compositions
    the feedback tasks ask for, as AudioCaps held none of BATON's); default the world's mix."""
    from training.build_dataset import teacher_rewording
    from training.world.clips import make_clip

    words = None
    if teacher_share > 0:
        from training.teacher_words import teacher_event_words

        words = teacher_words or teacher_event_words()
    clips = []
    for i in tqdm(range(n), desc="render world clips"):
        # its own stream for the wording, so the clips themselves are those of teacher_share = 0
        clips.append(make_clip(seed, "train", i, task=task, reword=teacher_rewording(np.random.default_rng([seed, 53, i]), teacher_share, words)))
    return [c.truth.caption for c in clips], [c.audio for c in clips]


@torch.no_grad()
def encode_set(pipe: TangoPipeline, texts: list[str], waveforms: list[np.ndarray | None], weights: np.ndarray, batch: int = 32, latents: list[torch.Tensor | None] | None = None, names: list[str] | None = None) -> LatentSet:
    """Waveforms -> the pipeline's log-mel -> VAE posteriors; texts -> frozen text states. Every clip
    is cropped or padded with silence to the generator's default duration (what it generates), so
    pretraining and feedback latents share one shape. With the generator's `default_timeline` on, each
    text's token visibility over latent time is what generation would use for it.

    `latents[i]`, when given, is clip i's own latent as the generator stored it (scaled): clip i then trains on
    it with no posterior spread, and its waveform (None) is neither read nor encoded. Errors name clip i by
    `names[i]` (its file) when given."""
    mel = MelSpectrogram(pipe.mel).to(pipe.device)
    frames = pipe.num_frames(pipe.config.default_duration_s)
    samples = frames * pipe.mel.hop_length
    latent_frames = frames // pipe.vae_scale
    shape = (pipe.vae.config.latent_channels, latent_frames, pipe.mel.n_mels // pipe.vae_scale)
    scaling = pipe.vae.config.scaling_factor
    latents = latents if latents is not None else [None] * len(texts)
    for i, z in enumerate(latents):
        name = names[i] if names else f"clip {i}"
        if z is not None and tuple(z.shape) != shape:
            raise ValueError(f"{name}: its stored latent has shape {tuple(z.shape)}, the generator trains on {shape}")
        if z is None and waveforms[i] is None:
            raise ValueError(f"{name}: neither a waveform nor a stored latent")
    means, stds, hiddens, masks, visibles = [], [], [], [], []
    vae_dtype = next(pipe.vae.parameters()).dtype
    for i in tqdm(range(0, len(texts), batch), desc="encode clips"):
        rows = range(i, min(i + batch, len(texts)))
        mean, std = torch.zeros(len(rows), *shape, dtype=torch.half), torch.zeros(len(rows), *shape, dtype=torch.half)
        audio_rows = [j for j in rows if latents[j] is None]
        if audio_rows:
            wav = torch.from_numpy(np.stack([np.pad(waveforms[j][:samples], (0, max(0, samples - len(waveforms[j])))) for j in audio_rows])).to(pipe.device)
            logmel = mel.log_magnitude(wav)[..., :frames].transpose(1, 2)  # [B, frames, mels], as the VAE was trained
            post = pipe.vae.encode(logmel[:, None].to(vae_dtype)).latent_dist
            mean[[j - i for j in audio_rows]], std[[j - i for j in audio_rows]] = post.mean.half().cpu(), post.std.half().cpu()
        for j in rows:
            if latents[j] is not None:  # the sample itself: no posterior spread
                mean[j - i] = (latents[j].float() / scaling).half()
        means.append(mean)
        stds.append(std)
        chunk = texts[i : i + batch]
        h, m = pipe.encode_text(chunk)
        hiddens.append(h.half().cpu())
        masks.append(m.bool().cpu())
        if pipe.config.default_timeline:
            visibles.append(pipe.token_visibility(chunk, [parse_timeline(text) for text in chunk], latent_frames))
        else:
            visibles.append(torch.ones(len(chunk), h.shape[1], latent_frames, dtype=torch.bool))
    length = max(h.shape[1] for h in hiddens)
    hidden = torch.cat([F.pad(h, (0, 0, 0, length - h.shape[1])) for h in hiddens])
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for m in masks])
    visible = torch.cat([F.pad(v, (0, 0, 0, length - v.shape[1]), value=True) for v in visibles])
    return LatentSet(torch.cat(means), torch.cat(stds), hidden, mask, torch.from_numpy(np.asarray(weights, np.float32)), visible)


# ----------------------------------------------------------------------------- loss
def baton_loss(
    unet,
    scheduler,
    z: torch.Tensor,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    is_pretrain: torch.Tensor,
    beta: float,
    generator: torch.Generator,
    snr_gamma: float = 5.0,
    position_channels: int = 0,
    text_position_channels: int = 0,
    visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BATON's objective on one UNet batch holding both terms' samples.

    z: clean latents [B, C, T, F] (already scaled); weight: r per feedback sample (ignored for
    pretraining samples); is_pretrain: which rows belong to the pretraining term. Each term is the
    mean over its own rows, so beta means the same whatever the two halves' sizes. visible [B, L, T]:
    the rows' timeline masks (services.timeline; needs the UNet's TimelineAttnProcessor), or None."""
    device = z.device
    noise = torch.randn(z.shape, generator=generator).to(device, z.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z),), generator=generator).to(device)
    noisy = scheduler.add_noise(z, noise, t)
    target = scheduler.get_velocity(z, noise, t)
    timeline = None if visible is None or bool(visible.all()) else {"timeline": TimelineMask(visible, z.shape[-1])}
    pred = unet(with_position_channels(noisy, position_channels), t, encoder_hidden_states=with_token_positions(hidden, text_position_channels), encoder_attention_mask=mask, cross_attention_kwargs=timeline).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * min_snr_weight(scheduler, t, snr_gamma)
    pre, fb = is_pretrain, ~is_pretrain
    zero = per_sample.sum() * 0.0
    pretrain_term = per_sample[pre].mean() if pre.any() else zero
    feedback_term = (weight[fb].to(per_sample) * per_sample[fb]).mean() if fb.any() else zero
    loss = beta * pretrain_term + feedback_term
    return loss, {"loss": loss, "pretrain": pretrain_term, "feedback": feedback_term}


# ----------------------------------------------------------------------------- main
def _shown(path: Path) -> str:
    """A path as a MANIFEST should name it: relative to the working directory (the repository) when inside
    it, so that it names the same checkpoint on another machine."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def lineage(init: Path, commit: str | None) -> dict:
    """Where a fine-tune comes from, for its MANIFEST. "base" is the generator the chain of fine-tunes started
    at: a fine-tune of a BATON fine-tune names its init's base, so a served generator always names the shipped
    base it descends from. "init" is the fine-tune it started from, when that is not the base: its version,
    command and the repository commit holding it (a served init is replaced by its successor in the tree)."""
    here = {"dir": _shown(init), "version": checkpoint_version(init)}
    path = Path(init) / MANIFEST
    parent = json.loads(path.read_text()) if path.is_file() else {}
    if "baton" not in parent or "base" not in parent:
        return {"base": here}
    return {"base": parent["base"], "init": {**here, "command": parent.get("command"), "in_repository_at": commit, **({"init": parent["init"]} if "init" in parent else {})}}


def train_baton(
    init: Path,
    out: Path,
    hd_dirs: list[Path] = (),
    rd_dirs: list[Path] = (),
    reward_model_dir: Path | None = None,
    beta: float = 0.25,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-4,
    n_pretrain: int = 2500,
    pretrain_teacher_share: float = 0.0,
    pretrain_task: Task | None = None,
    clause_only_rate: float = 0.0,
    clause_channels: bool = False,
    seed: int = 0,
    work_dir: Path = Path("runs/baton"),
    checkpoint_every: int = 100,
    device: str | None = None,
    command: str | None = None,
    eval_n: int = 0,
    reencode_feedback: bool = False,
    hard_prompt_share: float = 1.0,
) -> dict:
    """Fine-tune `init`'s UNet (resuming from work_dir) and write the fine-tuned generator to `out`.

    batch_size counts the rows of each term: one step sees batch_size pretraining and batch_size
    feedback clips. eval_n > 0 evaluates the result as `tta train generator` does (eval_n held-out prompts
    per task, N=1, and the VAE/vocoder round trip) and puts the metrics into the MANIFEST. Feedback clips
    that `init` generated itself train on the latents it stored (`own_latents`) unless reencode_feedback.
    hard_prompt_share < 1 trains on each feedback set's hardest prompts only (`hardest_prompts`)."""
    hd_dirs, rd_dirs = [Path(d) for d in hd_dirs], [Path(d) for d in rd_dirs]
    if not hd_dirs and not rd_dirs and beta == 0:
        raise ValueError("nothing to train on: give --feedback (labelled, HD) and/or --reward-data (reward-scored, RD) directories, or beta > 0 for the pretraining term alone")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not 0 <= pretrain_teacher_share <= 1:
        raise ValueError(f"pretrain_teacher_share must be in [0, 1], got {pretrain_teacher_share}")
    if not 0 <= clause_only_rate <= 1:
        raise ValueError(f"clause_only_rate must be in [0, 1], got {clause_only_rate}")
    commit_at_start = current_commit()
    dev = pick_device(device)
    torch.manual_seed(seed)
    pipe = TangoPipeline.from_pretrained(init, device=dev, dtype=torch.float32)
    widened = clause_channels and not pipe.config.clause_channels
    if widened:
        pipe = with_clause_channels(pipe)
    if clause_only_rate > 0 and not pipe.config.clause_channels:
        raise ValueError(f"clause_only_rate needs a generator with clause channels; {init} has none (add them with clause_channels)")
    work_dir.mkdir(parents=True, exist_ok=True)

    # data, encoded once and cached: the encoders are frozen
    cache = work_dir / "latents.pt"
    data_description = {"init": checkpoint_version(init), "hd": [str(d) for d in hd_dirs], "rd": [str(d) for d in rd_dirs], "n_pretrain": n_pretrain, "pretrain_teacher_share": pretrain_teacher_share, "seed": seed, "timeline": pipe.config.default_timeline}
    if pipe.config.clause_channels:  # the cached text states carry them (older caches, without the key, stay valid)
        data_description["clause_channels"] = True
    if not reencode_feedback:  # older caches (re-encoded feedback, without the key) stay valid for reencode_feedback
        data_description["own_latents"] = True
    if hard_prompt_share < 1:  # older caches (every prompt, without the key) stay valid
        data_description["hard_prompt_share"] = hard_prompt_share
    if pretrain_task is not None:  # older caches (the world's task mix, without the key) stay valid
        data_description["pretrain_task"] = pretrain_task
    if cache.is_file() and (work_dir / "data.json").is_file() and json.loads((work_dir / "data.json").read_text())["key"] == data_description:
        saved = torch.load(cache, weights_only=True)
        pre, fb = (LatentSet(**saved[k]) for k in ("pretrain", "feedback"))
        described = json.loads((work_dir / "data.json").read_text())["feedback"]
    else:
        captions, audio = world_clips(n_pretrain, seed, pretrain_teacher_share, task=pretrain_task)
        pre = encode_set(pipe, captions, audio, np.ones(len(captions), np.float32))
        prompts, paths, weights, described, own = feedback_clips(hd_dirs, rd_dirs, reward_model_dir, None if reencode_feedback else checkpoint_version(init), hard_prompt_share)
        if prompts:
            waveforms = [None if z is not None else read_audio(p, pipe.sample_rate) for p, z in zip(tqdm(paths, desc="read feedback clips"), own)]
            fb = encode_set(pipe, prompts, waveforms, weights, latents=own, names=[str(p) for p in paths])
        else:  # the pretraining term alone (an ablation): no feedback rows in any batch
            fb = LatentSet(*(t[:0] for t in (pre.mean, pre.std, pre.hidden, pre.mask, pre.weight, pre.visible)))
        torch.save({"pretrain": vars(pre), "feedback": vars(fb)}, cache)
        (work_dir / "data.json").write_text(json.dumps({"key": data_description, "feedback": described}, indent=2) + "\n")
    if len(pre) == 0 or (len(fb) == 0 and (hd_dirs or rd_dirs)):
        raise ValueError(f"empty training data: {len(pre)} pretraining and {len(fb)} feedback clips")
    length = max(pre.hidden.shape[1], fb.hidden.shape[1])
    pre, fb = pre.padded(length), fb.padded(length)
    feedback_rows = batch_size if len(fb) else 0
    print(f"data: {len(pre)} pretraining clips, {len(fb)} feedback clips" + (f" (mean r {float(fb.weight.mean()):.3f}, {int((fb.weight > 0).sum())} with r > 0)" if len(fb) else " (the pretraining term alone)"))
    empty_h, empty_m = pipe.encode_text([""])
    empty_hidden = F.pad(empty_h[0].float().cpu(), (0, 0, 0, pre.hidden.shape[1] - empty_h.shape[1]))
    empty_mask = F.pad(empty_m[0].bool().cpu(), (0, pre.mask.shape[1] - empty_m.shape[1]))

    # model: only the UNet trains
    from diffusers import DDPMScheduler

    unet = pipe.unet.train().requires_grad_(True)
    scheduler = DDPMScheduler.from_config(pipe.scheduler_config)
    stage = Stage("unet", unet, work_dir, steps, lr=lr, warmup=min(100, max(1, steps // 10)))
    scaling = pipe.vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed * 1000 + stage.step)
    is_pretrain = torch.cat([torch.ones(batch_size, dtype=torch.bool), torch.zeros(feedback_rows, dtype=torch.bool)]).to(dev)

    def draw(s: LatentSet, idx: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        eps = torch.randn(s.mean[idx].shape, generator=g)
        z = (s.mean[idx].float() + s.std[idx].float() * eps) * scaling
        h, m, v = s.hidden[idx].float(), s.mask[idx], s.visible[idx]
        if drop is not None:  # the empty prompt: no timeline, as the unconditional branch at generation
            h, m, v = torch.where(drop[:, None, None], empty_hidden, h), torch.where(drop[:, None], empty_mask, m), v | drop[:, None, None]
        return z, h, m, s.weight[idx], v

    bar = tqdm(total=steps, initial=stage.step, desc="baton fine-tune")
    while not stage.done:
        zp, hp, mp, wp, vp = draw(pre, torch.randint(len(pre), (batch_size,), generator=g), torch.rand(batch_size, generator=g) < CFG_DROPOUT)
        if clause_only_rate > 0:  # these rows describe their sound by the clause channels alone
            hp[torch.rand(batch_size, generator=g) < clause_only_rate, :, : pipe.text_encoder.hidden_size] = 0
        zf, hf, mf, wf, vf = draw(fb, torch.randint(max(1, len(fb)), (feedback_rows,), generator=g), None)
        z, h, m, w, v = (torch.cat(pair).to(dev) for pair in ((zp, zf), (hp, hf), (mp, mf), (wp, wf), (vp, vf)))
        loss, parts = baton_loss(unet, scheduler, z, h, m, w, is_pretrain, beta, g, position_channels=pipe.config.position_channels, text_position_channels=pipe.config.text_position_channels, visible=v)
        stage.update(loss)
        show(bar, stage.record(**parts))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    bar.close()

    # output: the init generator with the fine-tuned UNet; what it descends from is named before `out` is
    # written, since out may replace init (shipping a successor of the served generator)
    origin = lineage(init, commit_at_start)
    widened_from_base = widened or ("init" in origin and json.loads((Path(init) / MANIFEST).read_text())["baton"].get("widened_for_clause_channels", False))
    pipe.unet = unet.eval().requires_grad_(False)
    pipe.save_pretrained(out)
    metrics, evaluation = {}, None
    if eval_n:
        from training.eval_generator import manifest_evaluation

        metrics, evaluation = manifest_evaluation(pipe, eval_n)
    history = [json.loads(line) for line in (stage.dir / "log.jsonl").read_text().splitlines() if line.strip()]
    (out / TRAINING_LOG).write_text("".join(json.dumps(r) + "\n" for r in history))  # the curves travel with the weights
    write_manifest(
        out,
        command=command,
        seed=seed,
        metrics=metrics,
        git_commit=commit_at_start,
        extra={
            **origin,
            "baton": {"beta": beta, "steps": stage.step, "batch_size_per_term": batch_size, "lr": lr, "timeline": pipe.config.default_timeline, "snr_gamma": 5.0, "cfg_dropout_pretrain": CFG_DROPOUT, "pretrain_teacher_share": pretrain_teacher_share, "pretrain_task": pretrain_task or "any", "clause_only_rate": clause_only_rate, "clause_channels": pipe.config.clause_channels, "widened_for_clause_channels": widened_from_base, "n_pretrain": len(pre), "feedback_clips": len(fb), "hard_prompt_share": hard_prompt_share},
            "data": described,
            "final_loss": {k: history[-1][k] for k in ("loss", "pretrain", "feedback")} if history else None,
            "evaluation": evaluation,
        },
    )
    return metrics
