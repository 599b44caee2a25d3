"""`tta train rewriter`: the prompt rewriter, in the two stages of "On the Open Prompt Challenge in
Conditional Audio Generation" (arXiv 2311.00897).

--stage sft
    Data: pairs drawn from the world. Most map an open prompt (a scene description, "a farmyard") to
    an audionese caption of an event set that scene produces ("a cow moos, then a dog barks"); the
    rest map a caption to itself, so passing a descriptive prompt through is learnt, not hard-coded.
    Model: a small T5ForConditionalGeneration trained from scratch, with a BPE tokenizer trained here
    (offline, with `tokenizers`) on the world's training texts. Loop: teacher-forced cross-entropy.

--stage feedback
    Data: for each training open prompt, sample K rewrites from the SFT model, generate one clip per
    rewrite (all K from the same noise seed, so they differ only by the rewrite), and rank them by
    CLAP(user prompt, clip), cached in feedback.jsonl (resumable). Loop: the BRIO-style margin
    ranking loss over the ranked candidates,
        L_rank = mean_{i<j} max(0, s(c_j) - s(c_i) + margin * (j - i)),
    with s the length-normalised log-likelihood, plus MLE on the best candidate and MLE on
    pass-through pairs (the feedback prompts are all scene descriptions; without them the model would
    forget to leave captions alone). SacreBLEU(prompt, rewrite) is logged as the fidelity guard.

Both stages are resumable (`Stage`), show a progress bar and checkpoint periodically; the output is a
rewriter directory (model, tokenizer, MANIFEST.json with metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from services.manifest import checkpoint_version, write_manifest
from services.rewriter import INSTRUCTION, PromptRewriter
from training.train_generator import Stage, pick_device, show
from training.world.captions import mentioned_events
from training.world.clips import sample_scene_spec, sample_spec
from training.world.scenes import SCENES, Scene

TOKENIZER_SEED = 7
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# 3+3 layers of width 128: 1.8 M parameters (embeddings tied, as in T5 v1.0), ~20 min for 7000 steps on this CPU, 3.7 MB in fp16
MINI_T5 = dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=3, num_decoder_layers=3, feed_forward_proj="gated-gelu", dropout_rate=0.1, tie_word_embeddings=True)


# ----------------------------------------------------------------------------- data
def sft_pair(rng: np.random.Generator, passthrough: float) -> tuple[str, str]:
    """(input prompt, target rewrite): a scene description -> a caption it can sound like, or a
    caption -> itself. Training phrasings, descriptions and event pairs only."""
    if rng.random() < passthrough:
        caption = sample_spec(rng, "train").caption
        return caption, caption
    prompt, spec = sample_scene_spec(rng, heldout=False)
    return prompt, spec.caption


def sft_pairs(n: int, seed: int, passthrough: float) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [sft_pair(rng, passthrough) for _ in range(n)]


def passthrough_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    return sft_pairs(n, seed, passthrough=1.0)


def scene_of(prompt: str, heldout: bool) -> Scene:
    for scene in SCENES:
        if prompt in (scene.heldout_descriptions if heldout else scene.descriptions):
            return scene
    raise KeyError(f"{prompt!r} is not a {'held-out' if heldout else 'training'} scene description")


def open_prompts(heldout: bool) -> list[str]:
    return [d for s in SCENES for d in (s.heldout_descriptions if heldout else s.descriptions)]


# ----------------------------------------------------------------------------- tokenizer and model
def build_tokenizer(texts: list[str], vocab_size: int = 1000):
    """A lower-cased BPE tokenizer (SentencePiece-style word boundaries, T5's pad/eos/unk ids 0/1/2)
    trained on `texts`; any character outside its alphabet becomes <unk>, never an error."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()&/")
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], initial_alphabet=alphabet, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=512)


def tokenizer_corpus(seed: int, n: int = 20_000) -> list[str]:
    """Training texts only: the instruction, training descriptions and training captions."""
    pairs = sft_pairs(n, seed, passthrough=0.5)
    return [INSTRUCTION, *open_prompts(heldout=False), *(t for _, t in pairs)]


def mini_rewriter(tokenizer, seed: int, device: torch.device | str = "cpu") -> PromptRewriter:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    vocab = (len(tokenizer) + 7) // 8 * 8
    config = T5Config(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id, **MINI_T5)
    return PromptRewriter(T5ForConditionalGeneration(config), tokenizer, device)


# ----------------------------------------------------------------------------- losses
def mle_loss(rewriter: PromptRewriter, prompts: list[str], targets: list[str]) -> torch.Tensor:
    """Token-mean cross-entropy of the targets given the instruction-wrapped prompts."""
    enc = rewriter._encode(prompts)
    labels = rewriter.tokenizer(targets, padding=True, truncation=True, max_length=rewriter.max_new_tokens, return_tensors="pt")["input_ids"].to(rewriter.device)
    return rewriter.model(**enc, labels=labels.masked_fill(labels == rewriter.tokenizer.pad_token_id, -100)).loss


def ranking_loss(scores: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """BRIO's margin ranking loss for candidates sorted best first along dim 1.

    Every ordered pair i < j (both valid) costs max(0, s_j - s_i + margin * (j - i)): a better-ranked
    candidate must out-score a worse one by a margin growing with their rank distance. Mean over pairs."""
    k = scores.shape[1]
    i, j = torch.triu_indices(k, k, offset=1, device=scores.device)
    pair_valid = valid[:, i] & valid[:, j]
    cost = torch.relu(scores[:, j] - scores[:, i] + margin * (j - i).to(scores.dtype))
    n_pairs = pair_valid.sum()
    if n_pairs == 0:
        return scores.sum() * 0.0
    return (cost * pair_valid).sum() / n_pairs


# ----------------------------------------------------------------------------- metrics
def sacrebleu_score(rewrites: list[str], references: list[str]) -> float:
    """Corpus SacreBLEU of the rewrites against the prompts they came from (the fidelity guard)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(rewrites, [references]).score)


def text_scene_consistency(rewrites: list[str], scenes: list[Scene]) -> float:
    """Share of the events a rewrite names that belong to its scene (0 when it names none), mean."""
    values = []
    for text, scene in zip(rewrites, scenes):
        named = mentioned_events(text)
        values.append(sum(e in scene.events for e in named) / len(named) if named else 0.0)
    return float(np.mean(values))


def text_metrics(rewriter: PromptRewriter, seed: int = 1234, n_passthrough: int = 200) -> dict[str, float]:
    """Cheap, audio-free checks of a rewriter: scene consistency of what its greedy rewrites name, for
    training and held-out descriptions, and how well it leaves captions alone (SacreBLEU), with
    training and with held-out phrasings."""
    from training.world.clips import clip_rng

    out: dict[str, float] = {}
    for heldout in (False, True):
        prompts = open_prompts(heldout)
        rewrites = rewriter.rewrite(prompts)
        name = "heldout" if heldout else "train"
        out[f"{name}.text_scene_consistency"] = text_scene_consistency(rewrites, [scene_of(p, heldout) for p in prompts])
        out[f"{name}.bleu_vs_prompt"] = sacrebleu_score(rewrites, prompts)
    for split in ("train", "heldout"):
        captions = [sample_spec(clip_rng(seed, split, i), split).caption for i in range(n_passthrough)]  # type: ignore[arg-type]
        out[f"passthrough_bleu_{split}"] = sacrebleu_score(rewriter.rewrite(captions), captions)
    return out


def _save(rewriter: PromptRewriter, out: Path, command: str | None, seed: int, metrics: dict, extra: dict) -> Path:
    """The rewriter directory; weights stored in fp16 (half the bytes; loaded back in fp32)."""
    model = rewriter.model
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half.half().save_pretrained(out)
    rewriter.tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config.pop("dtype", None)  # loaders choose the compute dtype; fp16 is only how it is stored
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_manifest(out, command=command, seed=seed, metrics=metrics, extra=extra)
    return out


# ----------------------------------------------------------------------------- stage: sft
def train_sft(out: Path, steps: int, batch_size: int, lr: float, seed: int, work_dir: Path, passthrough: float, vocab_size: int, checkpoint_every: int, device: str | None, command: str | None = None) -> dict:
    device = pick_device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = work_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():  # trained once; a resumed run must reuse the same ids
        build_tokenizer(tokenizer_corpus(TOKENIZER_SEED), vocab_size).save_pretrained(tok_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    rewriter = mini_rewriter(tokenizer, seed, device)
    rewriter.model.train()
    stage = Stage("sft", rewriter.model, work_dir, steps, lr, warmup=200)
    rng = np.random.default_rng([seed, stage.step])  # a resumed run draws fresh pairs
    bar = tqdm(total=steps, initial=stage.step, desc="rewriter sft")
    while not stage.done:
        batch = [sft_pair(rng, passthrough) for _ in range(batch_size)]
        loss = mle_loss(rewriter, [p for p, _ in batch], [t for _, t in batch])
        stage.update(loss)
        show(bar, stage.record(loss=loss))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    bar.close()
    rewriter.model.eval()
    metrics = {**text_metrics(rewriter), "final_loss": float(loss.item()) if steps > 0 else None}
    extra = {"stage": "sft", "model": {"class": "T5ForConditionalGeneration", **MINI_T5, "parameters": sum(p.numel() for p in rewriter.model.parameters())}, "data": {"passthrough": passthrough, "pairs_seen": steps * batch_size}}
    _save(rewriter, out, command, seed, metrics, extra)
    return metrics


# ----------------------------------------------------------------------------- stage: feedback
def collect_feedback(rewriter: PromptRewriter, generator_dir: Path, clap_dir: Path, oracle_dir: Path | None, work_dir: Path, n_prompts: int, k: int, seed: int, temperature: float, generation_steps: int | None = None, prompts_per_call: int = 4, device: str | None = None) -> list[dict]:
    """Rows {prompt, seed, candidates (unique, sampling order), clap [per candidate], events [oracle,
    per candidate; a diagnostic only, never used by the loss]} in work_dir/feedback.jsonl; resumable."""
    from services.clap import load_clap
    from services.generator import TangoPipeline
    from training.world.oracle import load_oracle

    path = work_dir / "feedback.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    prompts = open_prompts(heldout=False)
    order = np.random.default_rng(seed).permutation(n_prompts) % len(prompts)
    todo = list(range(len(rows), n_prompts))
    if not todo:
        return rows
    pipe = TangoPipeline.from_pretrained(generator_dir, device=device)
    clap = load_clap(clap_dir)
    oracle = load_oracle(None if oracle_dir is None else str(oracle_dir))
    with open(path, "a") as f, tqdm(total=n_prompts, initial=len(rows), desc="feedback: sample, generate, CLAP-rank") as bar:
        for start in range(0, len(todo), prompts_per_call):
            idx = todo[start : start + prompts_per_call]
            user = [prompts[int(order[i])] for i in idx]
            sampled = rewriter.sample(user, k, temperature=temperature, seed=seed * 100_003 + idx[0])
            cands = [list(dict.fromkeys(c for c in s if c.strip())) for s in sampled]
            flat = [c for cs in cands for c in cs]
            seeds = [seed * 1000 + i for i, cs in zip(idx, cands) for _ in cs]  # one noise per prompt
            audio = pipe.generate(flat, num_candidates=1, seed=seeds, steps=generation_steps).waveforms[:, 0]
            flat_user = [u for u, cs in zip(user, cands) for _ in cs]
            clap_scores = clap.score(flat_user, audio, pipe.sample_rate)
            detected = [sorted(d.present()) for d in oracle.detect(audio)]
            pos = 0
            for i, u, cs in zip(idx, user, cands):
                n = len(cs)
                row = {"i": i, "prompt": u, "seed": seed * 1000 + i, "candidates": cs, "clap": [float(x) for x in clap_scores[pos : pos + n]], "events": detected[pos : pos + n]}
                f.write(json.dumps(row) + "\n")
                rows.append(row)
                pos += n
            f.flush()
            bar.update(len(idx))
    return rows


def feedback_diagnostics(rows: list[dict]) -> dict[str, float]:
    """How far the CLAP ranking agrees with the oracle's scene consistency among one prompt's
    candidates (the paper assumes CLAP is a good judge; this measures it), and the spread it ranks."""
    agree, pairs, best_cons, mean_cons = 0, 0, [], []
    for row in rows:
        scene = scene_of(row["prompt"], heldout=False)
        cons = [sum(e in scene.events for e in ev) / len(ev) if ev else 0.0 for ev in row["events"]]
        mean_cons.append(np.mean(cons))
        best_cons.append(cons[int(np.argmax(row["clap"]))])
        for a in range(len(cons)):
            for b in range(a + 1, len(cons)):
                if cons[a] != cons[b] and row["clap"][a] != row["clap"][b]:
                    pairs += 1
                    agree += (cons[a] > cons[b]) == (row["clap"][a] > row["clap"][b])
    return {
        "rows": len(rows),
        "candidates_per_prompt": float(np.mean([len(r["candidates"]) for r in rows])),
        "clap_oracle_pair_agreement": agree / pairs if pairs else float("nan"),
        "scene_consistency_mean_candidate": float(np.mean(mean_cons)),
        "scene_consistency_clap_best": float(np.mean(best_cons)),
    }


def train_feedback(
    init: Path, out: Path, steps: int, batch_size: int, lr: float, margin: float, mle_weight: float, passthrough_weight: float, n_prompts: int, k: int, temperature: float, seed: int, work_dir: Path,
    generator_dir: Path, clap_dir: Path, oracle_dir: Path | None, checkpoint_every: int, device: str | None, command: str | None = None, generation_steps: int | None = None,
) -> dict:
    device = pick_device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    rewriter = PromptRewriter.from_pretrained(init, device=device)
    rows = collect_feedback(rewriter, generator_dir, clap_dir, oracle_dir, work_dir, n_prompts, k, seed, temperature, generation_steps, device=str(device))
    ranked = [[c for _, c in sorted(zip(r["clap"], r["candidates"]), key=lambda x: -x[0])] for r in rows]
    usable = [i for i, c in enumerate(ranked) if len(c) >= 2]
    if not usable:
        raise ValueError("no feedback prompt has two distinct rewrites to rank; raise --k or --temperature")
    rewriter.model.train()
    stage = Stage("feedback", rewriter.model, work_dir, steps, lr, warmup=20, flush_every=10)
    rng = np.random.default_rng([seed, stage.step])
    bar = tqdm(total=steps, initial=stage.step, desc="rewriter feedback")
    while not stage.done:
        pick = rng.choice(usable, size=min(batch_size, len(usable)), replace=False)
        prompts, cands = [rows[i]["prompt"] for i in pick], [ranked[i] for i in pick]
        scores, valid = rewriter.sequence_scores(prompts, cands)
        rank = ranking_loss(scores, valid, margin)
        best = mle_loss(rewriter, prompts, [c[0] for c in cands])
        keep = passthrough_pairs(batch_size, int(rng.integers(2**31)))
        passthrough = mle_loss(rewriter, [p for p, _ in keep], [t for _, t in keep])
        loss = rank + mle_weight * best + passthrough_weight * passthrough
        stage.update(loss)
        show(bar, stage.record(loss=loss, rank=rank, mle_best=best, mle_passthrough=passthrough))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    bar.close()
    rewriter.model.eval()
    metrics = {**text_metrics(rewriter), "feedback_data": feedback_diagnostics(rows)}
    extra = {
        "stage": "feedback",
        "init": checkpoint_version(init),
        "ranking": {"judge": f"CLAP(user prompt, clip) with {checkpoint_version(clap_dir)}", "generator": checkpoint_version(generator_dir), "k": k, "temperature": temperature, "generation_steps": generation_steps or "generator default", "margin": margin, "mle_weight": mle_weight, "passthrough_weight": passthrough_weight},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback_log.jsonl").write_text((stage.dir / "log.jsonl").read_text())  # the curves travel with the weights
    _save(rewriter, out, command, seed, metrics, extra)
    return metrics

