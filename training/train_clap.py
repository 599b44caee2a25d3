"""`tta train clap --scale mini`: a contrastive text-audio model of the world.

Reads top to bottom: data (training clips rendered once and cached as log-mel; captions; scene clips
whose text is either the caption or the open prompt a user would type; for sequences, the same
caption with the events named in another order as a hard negative), model (`services.clap.MiniClapModel`
over the frozen MiniLM), loop (symmetric InfoNCE, the order-swapped captions added to each clip's
text candidates), checkpoint (resumable train state; the final model with MANIFEST.json), and the
evaluation the MANIFEST records: text->audio retrieval R@1/R@10 over 1000 held-out clips.
"""

from __future__ import annotations

import math
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from services.audio import MelConfig, MelSpectrogram
from services.clap import MiniClap, MiniClapConfig, MiniClapModel
from services.generator import TangoPipeline
from services.manifest import checkpoint_version, write_manifest
from services.text_encoder import TextEncoder
from training.train_generator import Stage, pick_device, show
from training.world.clips import Clip, ClipSpec, make_clip, make_scene_clip, reordered_spec

SCENE_FRACTION = 0.2  # share of training clips that realise an open prompt (scene description)


# ----------------------------------------------------------------------------- data
def reordered_caption(spec: ClipSpec, rng: np.random.Generator) -> str | None:
    """The clip's caption with its events named in another order (None if order is not stated)."""
    if spec.relation != "sequence" or len(spec.events) < 2:
        return None
    return reordered_spec(spec, rng).caption


def render_clip(seed: int, split: str, i: int, teacher_share: float = 0.0, teacher_words: dict[str, list[str]] | None = None) -> Clip:
    """Clip i of a CLAP training set: a scene realisation (SCENE_FRACTION of them) or a captioned clip. A
    `teacher_share` of the captioned clips name their events by teacher words (`training.teacher_words`;
    never held-out words) instead of the world's training phrasings: the same sounds under other words, so
    the frozen text encoder's neighbourhoods, not only the caption vocabulary, carry the judge."""
    scene = np.random.default_rng([seed, 53, i]).random() < SCENE_FRACTION
    if scene:
        return make_scene_clip(seed, split, i)  # type: ignore[arg-type]
    from training.build_dataset import teacher_rewording

    reword = teacher_rewording(np.random.default_rng([seed, 61, i]), teacher_share, teacher_words)
    return make_clip(seed, split, i, reword=reword)  # type: ignore[arg-type]


def _render_chunk(args: tuple[int, int, int, str, float, dict | None]) -> tuple[np.ndarray, list[str], list[str | None], list[str | None]]:
    seed, start, n, split, teacher_share, teacher_words = args
    mel = MelSpectrogram(MelConfig.from_dict(MiniClapConfig().mel))
    audio, captions, swapped, open_prompts = [], [], [], []
    for i in range(start, start + n):
        clip = render_clip(seed, split, i, teacher_share, teacher_words)
        audio.append(clip.audio)
        captions.append(clip.truth.caption)
        swapped.append(reordered_caption(clip.spec, np.random.default_rng([seed, 59, i])))
        open_prompts.append(clip.truth.open_prompt)
    with torch.no_grad():
        logmel = mel(torch.from_numpy(np.stack(audio)))
    return logmel.half().numpy(), captions, swapped, open_prompts


def teacher_tag(teacher_share: float) -> str:
    """What cache names add for teacher-worded captions (nothing without: older caches stay valid)."""
    return f"-teacher{teacher_share:g}" if teacher_share else ""


def build_dataset(seed: int, n_clips: int, split: str, cache_dir: Path, workers: int = 1, teacher_share: float = 0.0) -> dict:
    """log-mel [N, mels, frames] (fp16), captions, reordered captions, open prompts; cached as .npz."""
    path = cache_dir / f"clap-{split}-{seed}-{n_clips}{teacher_tag(teacher_share)}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return {k: data[k] for k in data.files}
    chunk = 500
    words = None
    if teacher_share > 0:
        from training.teacher_words import teacher_event_words

        words = teacher_event_words()
    jobs = [(seed, s, min(chunk, n_clips - s), split, teacher_share, words) for s in range(0, n_clips, chunk)]
    # one worker renders in this process: forking a process that already runs torch threads can deadlock
    if workers == 1:
        parts = [_render_chunk(job) for job in tqdm(jobs, desc=f"render {split} clips")]
    else:
        with Pool(workers) as pool:
            parts = list(tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc=f"render {split} clips"))
    data = {
        "logmel": np.concatenate([p[0] for p in parts]),
        "caption": np.array([c for p in parts for c in p[1]]),
        "swapped": np.array([c or "" for p in parts for c in p[2]]),
        "open_prompt": np.array([c or "" for p in parts for c in p[3]]),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


@torch.no_grad()
def build_codec_logmel(seed: int, n: int, split: str, generator_dir: Path, cache_dir: Path, chunk: int = 256) -> np.ndarray:
    """log-mel [n, mels, frames] (fp16) of the first n clips of `build_dataset(seed, ..., split)` after the
    generator's VAE + vocoder round trip (`TangoPipeline.reconstruct`): clips whose captions are known but
    which sound the way generated audio does. The judge scores generated clips, and on clean clips alone it
    learns cues the codec smears. Cached per generator version, chunk by chunk, so a stopped build resumes."""
    path = cache_dir / f"clap-codec-{split}-{seed}-{n}-{checkpoint_version(generator_dir)}.npy"
    if path.is_file():
        return np.load(path)
    pipe = TangoPipeline.from_pretrained(generator_dir)
    if pipe.sample_rate != MiniClapConfig().mel["sample_rate"]:
        raise ValueError(f"generator at {generator_dir} makes {pipe.sample_rate} Hz audio; the CLAP data is {MiniClapConfig().mel['sample_rate']} Hz")
    mel = MelSpectrogram(MelConfig.from_dict(MiniClapConfig().mel))
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in tqdm(range(0, n, chunk), desc=f"codec round trip of {split} clips", unit="chunk"):
        part = cache_dir / f"{path.stem}.part{start}.npy"
        if not part.is_file():
            audio = np.stack([render_clip(seed, split, i).audio for i in range(start, min(n, start + chunk))])
            wav = np.concatenate([pipe.reconstruct(audio[j : j + 32]) for j in range(0, len(audio), 32)])
            tmp = part.with_suffix(".tmp.npy")
            np.save(tmp, mel(torch.from_numpy(wav)).half().numpy())
            tmp.replace(part)
        parts.append(np.load(part))
    data = np.concatenate(parts)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, data)
    tmp.replace(path)
    for start in range(0, n, chunk):
        (cache_dir / f"{path.stem}.part{start}.npy").unlink()
    return data


@torch.no_grad()
def encode_texts(text_encoder: TextEncoder, texts: list[str], cache: Path, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen token states [N, L, D] (fp16) and masks [N, L] of every text, cached on disk."""
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["n"] == len(texts):
            return saved["states"], saved["mask"]
    length = text_encoder.max_length
    states = torch.zeros(len(texts), length, text_encoder.hidden_size, dtype=torch.float16)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for i in tqdm(range(0, len(texts), batch), desc="encode texts"):
        h, m = text_encoder(texts[i : i + batch])
        states[i : i + len(h), : h.shape[1]] = h.half().cpu()
        mask[i : i + len(h), : h.shape[1]] = m.cpu()
    width = int(mask.sum(1).max())  # drop padding no text uses
    states, mask = states[:, :width].contiguous(), mask[:, :width].contiguous()
    torch.save({"n": len(texts), "states": states, "mask": mask}, cache)
    return states, mask


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def audio_embeddings(clap: MiniClap, logmel: np.ndarray, batch: int = 100) -> torch.Tensor:
    """Normalised audio embeddings of cached log-mels [N, mels, frames] -> [N, D]."""
    model = clap.model.eval()
    return torch.cat([F.normalize(model.audio_forward(torch.from_numpy(logmel[i : i + batch]).float().to(clap.device)), dim=-1).cpu() for i in range(0, len(logmel), batch)])


def retrieval_recalls(sim: torch.Tensor, texts: list[str]) -> dict[str, float]:
    """Recall@1/@10 from a text x clip similarity matrix in which clip i matches text i.

    `text_to_audio_by_caption.*` counts a hit when any clip with the query's exact caption is retrieved:
    identical queries cannot tell their clips apart (of the 1000 held-out clips of seed 0, 189 share a
    caption, up to 7 on one), so the strict score charges the model for a coin toss. Audio->text needs no
    such variant: a duplicated caption scores exactly as high as the true one, and only strictly higher
    texts count."""
    target = torch.arange(len(texts))
    names = np.asarray(texts)
    same_caption = torch.from_numpy(names[:, None] == names[None, :])
    best_same = sim.masked_fill(~same_caption, -torch.inf).amax(1)
    out = {}
    own = sim[target, target]
    for name, s, true_score in (("text_to_audio", sim, own), ("audio_to_text", sim.T, own), ("text_to_audio_by_caption", sim, best_same)):
        rank = (s > true_score[:, None]).sum(1)  # how many candidates beat the true one
        out[f"{name}.r1"] = float((rank < 1).float().mean())
        out[f"{name}.r10"] = float((rank < 10).float().mean())
    return out


@torch.no_grad()
def retrieval(clap: MiniClap, logmel: np.ndarray, texts: list[str]) -> dict[str, float]:
    """Text->audio and audio->text recall@1/@10 of `clap` over the whole set (`retrieval_recalls`)."""
    audio = audio_embeddings(clap, logmel)
    text = torch.from_numpy(clap.embed_text(texts))
    return retrieval_recalls(text @ audio.T, texts)


@torch.no_grad()
def order_accuracy(clap: MiniClap, logmel: np.ndarray, captions: np.ndarray, swapped: np.ndarray) -> float:
    """Share of sequence clips whose true caption scores above the same caption in another order."""
    idx = np.flatnonzero(swapped != "")
    if not len(idx):
        return float("nan")
    audio = audio_embeddings(clap, logmel[idx]).numpy()
    true = np.sum(clap.embed_text(list(captions[idx])) * audio, -1)
    wrong = np.sum(clap.embed_text(list(swapped[idx])) * audio, -1)
    return float(np.mean(true > wrong))


def heldout_metrics(clap: MiniClap, heldout: dict, codec_logmel: np.ndarray | None = None) -> dict[str, float]:
    """Retrieval and order accuracy on held-out clips (`build_dataset`), and on the same clips through a
    generator's codec (`build_codec_logmel`, keys prefixed `codec_heldout.`) when given."""
    captions = [str(c) for c in heldout["caption"]]
    metrics = retrieval(clap, heldout["logmel"], captions)
    metrics["heldout.order_accuracy"] = order_accuracy(clap, heldout["logmel"], heldout["caption"], heldout["swapped"])
    metrics["heldout.clips"] = float(len(captions))
    if codec_logmel is not None:
        codec = retrieval(clap, codec_logmel, captions)
        codec["order_accuracy"] = order_accuracy(clap, codec_logmel, heldout["caption"], heldout["swapped"])
        metrics.update({f"codec_heldout.{k}": v for k, v in codec.items()})
    return metrics


# ----------------------------------------------------------------------------- training
def train_clap(
    out: Path,
    steps: int = 3000,
    batch_size: int = 128,
    n_clips: int = 16000,
    eval_n: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    work_dir: Path = Path("runs/clap"),
    checkpoint_every: int = 250,
    device: str | None = None,
    workers: int = 1,
    config: MiniClapConfig | None = None,
    command: str | None = None,
    codec_clips: int = 0,
    codec_share: float = 0.25,
    generator_dir: Path | None = None,
    init_dir: Path | None = None,
    teacher_share: float = 0.0,
) -> dict:
    """Train (or, from `init_dir`, fine-tune) the mini CLAP; write it with MANIFEST.json to `out`.
    teacher_share: the share of captioned training clips worded with teacher words (`render_clip`)."""
    if not 0 <= teacher_share <= 1:
        raise ValueError(f"teacher_share must be in [0, 1], got {teacher_share}")
    dev = pick_device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    work_dir.mkdir(parents=True, exist_ok=True)

    # data
    train = build_dataset(seed, n_clips, "train", work_dir / "cache", workers, teacher_share)
    heldout = build_dataset(seed, eval_n, "heldout", work_dir / "cache", workers)
    logmel = torch.from_numpy(train["logmel"])
    if codec_clips:
        if generator_dir is None:
            raise ValueError("codec_clips needs the generator whose codec the clips go through (generator_dir)")
        codec_clips = min(codec_clips, n_clips)
        codec = torch.from_numpy(build_codec_logmel(seed, codec_clips, "train", generator_dir, work_dir / "cache"))
        codec_heldout = build_codec_logmel(seed, eval_n, "heldout", generator_dir, work_dir / "cache")
    codec_rows = round(codec_share * batch_size) if codec_clips else 0
    captions, swapped, open_prompts = train["caption"], train["swapped"], train["open_prompt"]

    # model
    if init_dir is not None:
        # fine-tuning keeps the architecture of the model it starts from
        model = MiniClapModel.from_pretrained(init_dir).to(dev)
        if config is not None and config != model.config:
            raise ValueError(f"config differs from the one of the --init CLAP at {init_dir}")
        config = model.config
    else:
        config = config or MiniClapConfig()
        model = MiniClapModel(config).to(dev)
    text_encoder = TextEncoder.from_pretrained(config.text_encoder, max_length=config.text_max_length).to(dev)
    clap = MiniClap(model, text_encoder, dev)
    # the text encoder is frozen: its token states for every training text are computed once
    vocab = sorted(set(captions) | set(swapped) | set(open_prompts) - {""})
    text_id = {t: i for i, t in enumerate(vocab)}
    states, mask = encode_texts(text_encoder, vocab, work_dir / "cache" / f"text-states-{seed}-{n_clips}{teacher_tag(teacher_share)}.pt")
    caption_id = torch.tensor([text_id[c] for c in captions])
    swapped_id = torch.tensor([text_id[c] if c else -1 for c in swapped])
    open_id = torch.tensor([text_id[c] if c else -1 for c in open_prompts])
    stage = Stage("clap", model, work_dir, steps, lr, warmup=100)
    model.train()

    # loop
    bar = tqdm(total=steps, initial=stage.step, desc="clap")
    while not stage.done:
        idx = torch.randint(len(logmel), (batch_size,), generator=g)
        # the first codec_rows clips of each batch are heard through the generator's codec
        idx[:codec_rows] = torch.randint(codec_clips or 1, (codec_rows,), generator=g)
        audio = torch.cat([codec[idx[:codec_rows]], logmel[idx[codec_rows:]]]) if codec_rows else logmel[idx]
        use_open = (open_id[idx] >= 0) & (torch.rand(batch_size, generator=g) < 0.5)
        ids = torch.where(use_open, open_id[idx], caption_id[idx])
        negatives = swapped_id[idx][(swapped_id[idx] >= 0) & ~use_open]
        rows = torch.cat([ids, negatives])
        t = F.normalize(model.text_forward(states[rows].float().to(dev), mask[rows].to(dev)), dim=-1)
        a = F.normalize(model.audio_forward(audio.float().to(dev)), dim=-1)
        scale = model.logit_scale.clamp(max=math.log(100)).exp()
        logits = scale * a @ t.T  # [B, B + negatives]: each clip against every caption and every reordered one
        # the same text may describe several clips in a batch (e.g. a scene prompt): all count as matches
        same = (ids[:, None] == ids[None, :]).to(dev)
        target = same.float() / same.sum(1, keepdim=True)
        loss_a = torch.sum(-target * F.log_softmax(logits, dim=1)[:, :batch_size], dim=1).mean()
        loss_t = torch.sum(-target * F.log_softmax(logits[:, :batch_size].T, dim=1), dim=1).mean()
        loss = (loss_a + loss_t) / 2
        stage.update(loss)
        show(bar, stage.record(loss=loss, scale=scale))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    bar.close()

    # checkpoint + evaluation
    model.eval()
    metrics = heldout_metrics(clap, heldout, codec_heldout if codec_clips else None)
    training = {"steps": stage.step, "batch_size": batch_size, "n_clips": n_clips, "lr": lr, "device": str(dev), "text_encoder": config.text_encoder}
    if codec_clips:
        training.update(codec_clips=codec_clips, codec_share=codec_share, generator=checkpoint_version(generator_dir))
    if init_dir is not None:
        training["init"] = checkpoint_version(init_dir)
    if teacher_share:
        training["teacher_share"] = teacher_share
    model.cpu().save_pretrained(out)
    write_manifest(out, command=command, seed=seed, metrics={k: round(v, 4) for k, v in metrics.items()}, extra={"training": training})
    return metrics

