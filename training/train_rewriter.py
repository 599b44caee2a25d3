"""`tta train rewriter`: the prompt rewriter, in the two stages of "On the Open Prompt Challenge in
Conditional Audio Generation" (arXiv 2311.00897).

--stage sft
    Data: pairs drawn from the world. Most map an open prompt (a scene description, "a farmyard") to
    an audionese caption of an event set that scene produces ("a cow moos, then a dog barks"); the
    rest map a caption to the answer KEEP ("leave it as it is"), so passing a descriptive prompt through
    is learnt, not hard-coded.
    Model: a small T5ForConditionalGeneration trained from scratch over MiniLM's WordPiece vocabulary plus KEEP,
    its word embeddings MiniLM's (frozen; KEEP's row trains). Loop: teacher-forced cross-entropy.

--stage feedback
    Data: for each training open prompt, take the SFT model's greedy rewrite and K sampled ones, generate
    clips per rewrite (all from the same noise seeds, so they differ only by the rewrite), and rank them by
    mean CLAP(user prompt, clip), cached in feedback.jsonl (resumable). Loop: the BRIO-style margin
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from services.manifest import checkpoint_version, write_manifest
from services.rewriter import KEEP, PromptRewriter, resolve
from services.text_encoder import MINILM, resolve_location
from training.teacher_words import nearest_group_words, vocabulary_words
from training.train_generator import Stage, pick_device, show
from training.world.captions import mentioned_events, template_words
from training.world.clips import sample_scene_spec, sample_spec, scene_spec
from training.world.scenes import SCENE_BY_ID, SCENES, Scene

# 3+3 layers of width 128 over MiniLM's 30522-piece vocabulary (embeddings tied, as below): 5.7 M parameters, ~2 it/s at batch 32 on this CPU
MINI_T5 = dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=3, num_decoder_layers=3, feed_forward_proj="gated-gelu", dropout_rate=0.1, tie_word_embeddings=True)
# A vocabulary word is a teacher word of a scene when MiniLM puts "a WORD" at least this close (cosine) to one of
# the scene's training descriptions and this much closer than to any other scene's (chosen by the counts they give:
# 947 words, 6-205 per scene).
TEACHER_MIN_SIMILARITY, TEACHER_MIN_MARGIN = 0.45, 0.05
# The word embeddings' first SEMANTIC_DIMS columns are MiniLM's (frozen); the other d_model - SEMANTIC_DIMS train from
# zero. Trained columns helped copying (v3: 96 frozen, 40 of 60 captions copied exactly vs 35 fully frozen) but cost
# held-out scene knowledge (0.739 vs 0.844); since pass-through is the single answer KEEP, nothing is copied and
# the fully frozen table (v2's) is the default.
SEMANTIC_DIMS = 128
TEACHER_TEMPLATES = ("a {0}", "the {0}", "{0}", "near the {0}", "a {0} and a {1}", "the {0} by the {1}", "{0} at the {1}")
# a pass-through caption swaps one of its other words for a novel one
TEMPLATE_WORDS = template_words()


# ----------------------------------------------------------------------------- knowledge: MiniLM's vocabulary and what it knows
# A from-scratch rewriter only knows the ~500 words of the world's training texts: "a tempest outside" or "a
# hound yaps" are strings of unknown pieces to it. A FLAN-T5 knows English from pretraining; the mini rewriter
# borrows that knowledge from the frozen MiniLM the generator already uses, three ways: its WordPiece
# vocabulary (every English word has pieces with meaning), its word embeddings (frozen, so words never seen in
# training keep their place near the ones that were), and, as teacher, its sentence embeddings, which name
# the scene each vocabulary word belongs to.
def minilm_tokenizer():
    """MiniLM's WordPiece tokenizer (lower-cased, 30522 pieces) plus KEEP (id 30522) with T5's conventions: no
    [CLS], every sequence ends in the eos token [SEP], pad [PAD] = 0 (also the decoder start)."""
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bert = AutoTokenizer.from_pretrained(resolve_location(MINILM))
    tok = Tokenizer.from_str(bert.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    tok.post_processor = processors.TemplateProcessing(single="$A [SEP]", pair="$A [SEP] $B [SEP]", special_tokens=[("[SEP]", bert.sep_token_id)])
    tok.add_tokens([AddedToken(KEEP, normalized=False, special=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[SEP]", unk_token="[UNK]", model_max_length=512, clean_up_tokenization_spaces=True)


def minilm_word_embeddings(d_model: int, semantic_dims: int | None = None) -> torch.Tensor:
    """MiniLM's input word embeddings [30522, 384] on their top `semantic_dims` (default: `d_model`) principal
    axes, scaled to unit RMS (the scale T5 initialises its embeddings at), then zero-padded to `d_model`
    columns. Deterministic."""
    from transformers import AutoModel

    semantic_dims = d_model if semantic_dims is None else semantic_dims
    if not 0 < semantic_dims <= d_model:
        raise ValueError(f"semantic_dims must be in 1..{d_model}, got {semantic_dims}")
    table = AutoModel.from_pretrained(resolve_location(MINILM)).embeddings.word_embeddings.weight.detach().float()
    centred = table - table.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    axes = v[:semantic_dims] * torch.sign(v[:semantic_dims].sum(1, keepdim=True))  # a fixed sign per axis
    projected = centred @ axes.T
    projected = projected / projected.pow(2).mean().sqrt()
    return torch.cat([projected, projected.new_zeros(projected.shape[0], d_model - semantic_dims)], 1)


def teacher_scene_words(words: list[str], min_similarity: float = TEACHER_MIN_SIMILARITY, min_margin: float = TEACHER_MIN_MARGIN) -> dict[str, list[str]]:
    """Scene id -> the words MiniLM places in that scene, judged against the scene's training descriptions
    only (`training.teacher_words`). Caption words are never teacher words: a made-up description "thunder at
    the rain" would teach the model to rewrite, in any order, captions it must leave alone."""
    return nearest_group_words(words, {s.id: list(s.descriptions) for s in SCENES}, min_similarity, min_margin)


# ----------------------------------------------------------------------------- data
def teacher_description(rng: np.random.Generator, words: list[str]) -> str:
    """A made-up scene description from a scene's teacher words: "the chapel by the parish"."""
    template = TEACHER_TEMPLATES[int(rng.integers(len(TEACHER_TEMPLATES)))]
    return template.format(*(words[int(rng.integers(len(words)))] for _ in range(2)))


@dataclass(frozen=True)
class SftMix:
    """What the SFT pairs are drawn from. A pair is
    - pass-through (share `passthrough`): a training caption -> KEEP; with probability `novel_word_rate` one of
      its words is swapped for a random vocabulary word, so a caption is recognised whatever its nouns;
    - otherwise a scene pair: a scene description -> the caption of an event set the scene produces. The
      description is a training one, or (share `teacher_share`) one made from the scene's teacher words
      ("the chapel by the square")."""

    passthrough: float = 0.5
    teacher: dict[str, list[str]] | None = None
    teacher_share: float = 0.5
    novel_words: tuple[str, ...] = ()
    novel_word_rate: float = 0.0

    def passthrough_pair(self, rng: np.random.Generator) -> tuple[str, str]:
        caption = sample_spec(rng, "train").caption
        if self.novel_words and rng.random() < self.novel_word_rate:
            words = caption.split(" ")
            slots = [i for i, w in enumerate(words) if len(w.strip(",;")) >= 3 and w.strip(",;") not in TEMPLATE_WORDS]
            if slots:
                i = slots[int(rng.integers(len(slots)))]
                words[i] = words[i].replace(words[i].strip(",;"), self.novel_words[int(rng.integers(len(self.novel_words)))])
                caption = " ".join(words)
        return caption, KEEP

    def scene_pair(self, rng: np.random.Generator) -> tuple[str, str]:
        if self.teacher and rng.random() < self.teacher_share:
            scene = SCENES[int(rng.integers(len(SCENES)))]
            if self.teacher[scene.id]:
                return teacher_description(rng, self.teacher[scene.id]), scene_spec(rng, scene).caption
        prompt, spec = sample_scene_spec(rng, heldout=False)
        return prompt, spec.caption

    def pair(self, rng: np.random.Generator) -> tuple[str, str]:
        return self.passthrough_pair(rng) if rng.random() < self.passthrough else self.scene_pair(rng)


def sft_pairs(n: int, seed: int, mix: SftMix) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [mix.pair(rng) for _ in range(n)]


def passthrough_pairs(n: int, seed: int, mix: SftMix) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [mix.passthrough_pair(rng) for _ in range(n)]


def scene_of(prompt: str, heldout: bool) -> Scene:
    for scene in SCENES:
        if prompt in (scene.heldout_descriptions if heldout else scene.descriptions):
            return scene
    raise KeyError(f"{prompt!r} is not a {'held-out' if heldout else 'training'} scene description")


def open_prompts(heldout: bool) -> list[str]:
    return [d for s in SCENES for d in (s.heldout_descriptions if heldout else s.descriptions)]


# ----------------------------------------------------------------------------- model
def freeze_embeddings(rewriter: PromptRewriter, frozen_dims: int | None = None, trained_rows: tuple[int, ...] = ()) -> PromptRewriter:
    """Keeps the tied word embeddings' first `frozen_dims` columns (default: all) where they are, so a word
    training never showed keeps its place among those it did; the other columns, and the whole of
    `trained_rows` (tokens MiniLM never had, such as KEEP), train. Partly frozen, the table's frozen entries get
    no gradient (a hook); leave it out of weight decay too (`Stage(no_decay=...)`)."""
    weight = rewriter.model.get_input_embeddings().weight
    frozen_dims = weight.shape[1] if frozen_dims is None else min(frozen_dims, weight.shape[1])
    if frozen_dims == weight.shape[1] and not trained_rows:
        weight.requires_grad_(False)
        return rewriter
    trained = torch.ones_like(weight, requires_grad=False)
    trained[:, :frozen_dims] = 0
    trained[list(trained_rows)] = 1
    weight.register_hook(lambda grad: grad * trained)
    return rewriter


def mini_rewriter(tokenizer, seed: int, device: torch.device | str = "cpu", semantic_dims: int = SEMANTIC_DIMS) -> PromptRewriter:
    """A small T5 from scratch over MiniLM's vocabulary; its tied word embeddings are MiniLM's on `semantic_dims`
    frozen columns, and trained (from zero) on the rest; added tokens (KEEP) train their whole row."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id, **MINI_T5)
    model = T5ForConditionalGeneration(config)
    table = minilm_word_embeddings(config.d_model, semantic_dims)
    # KEEP's row trains from a random direction at the table's unit RMS: at zero, a tied output logit the decoder
    # cannot align to (25 caption -> KEEP steps learnt only the eos token)
    added = torch.randn(config.vocab_size - table.shape[0], table.shape[1])
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.cat([table, added]))
    return freeze_embeddings(PromptRewriter(model, tokenizer, device), semantic_dims, tuple(range(table.shape[0], config.vocab_size)))


# ----------------------------------------------------------------------------- losses
def mle_loss(rewriter: PromptRewriter, prompts: list[str], targets: list[str]) -> torch.Tensor:
    """Token-mean cross-entropy of the targets given the instruction-wrapped prompts."""
    enc = rewriter._encode(prompts)
    labels = rewriter.tokenizer(targets, padding=True, truncation=True, max_length=rewriter.max_new_tokens, return_tensors="pt")["input_ids"].to(rewriter.device)
    return rewriter.model(**enc, labels=labels.masked_fill(labels == rewriter.tokenizer.pad_token_id, -100)).loss


def ranking_loss(scores: torch.Tensor, valid: torch.Tensor, margin: float, judge: torch.Tensor | None = None, min_judge_gap: float = 0.0) -> torch.Tensor:
    """BRIO's margin ranking loss for candidates sorted best first along dim 1.

    Every ordered pair i < j (both valid) costs max(0, s_j - s_i + margin * (j - i)): a better-ranked
    candidate must out-score a worse one by a margin growing with their rank distance. Mean over pairs.
    With `judge` (the judge's scores the candidates were sorted by), a pair counts only when the judge put them
    at least `min_judge_gap` apart: a near-tie of a noisy judge is a coin flip, not a preference."""
    k = scores.shape[1]
    i, j = torch.triu_indices(k, k, offset=1, device=scores.device)
    pair_valid = valid[:, i] & valid[:, j]
    if judge is not None:
        pair_valid = pair_valid & (judge[:, i] - judge[:, j] >= min_judge_gap)
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
        answers = rewriter.greedy_outputs(captions)
        out[f"passthrough_bleu_{split}"] = sacrebleu_score([resolve(c, a) for c, a in zip(captions, answers)], captions)
        out[f"passthrough_keep_{split}"] = float(np.mean([a == KEEP for a in answers]))
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
TEACHER_WORDS = "teacher_words.json"  # travels with the rewriter, so the feedback stage draws the same prompts


SFT_RUNS = "sft_runs.jsonl"  # in the work dir: one line per invocation (command, step range, mix)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file the stages append to; none when it does not exist yet."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def load_teacher_words(directory: Path) -> dict[str, list[str]] | None:
    path = directory / TEACHER_WORDS
    return json.loads(path.read_text()) if path.is_file() else None


def train_sft(out: Path, steps: int, batch_size: int, lr: float, seed: int, work_dir: Path, passthrough: float, teacher_share: float, novel_word_rate: float, checkpoint_every: int, device: str | None, command: str | None = None, semantic_dims: int = SEMANTIC_DIMS) -> dict:
    device = pick_device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = minilm_tokenizer()
    words = vocabulary_words(tokenizer)
    teacher = load_teacher_words(work_dir)
    if teacher is None:  # computed once (~15 s); a resumed run reuses it
        teacher = teacher_scene_words(words)
        (work_dir / TEACHER_WORDS).write_text(json.dumps(teacher, indent=1) + "\n")
    mix = SftMix(passthrough, teacher, teacher_share, tuple(words), novel_word_rate)
    rewriter = mini_rewriter(tokenizer, seed, device, semantic_dims)
    rewriter.model.train()
    # weight decay would shrink the frozen columns of a partly trained table
    stage = Stage("sft", rewriter.model, work_dir, steps, lr, warmup=200, no_decay=[rewriter.model.get_input_embeddings().weight])
    mix_record = {k: v for k, v in asdict(mix).items() if k not in ("teacher", "novel_words")}
    with open(work_dir / SFT_RUNS, "a") as f:  # a resumed run may change the mix: every invocation is part of the recipe
        f.write(json.dumps({"command": command, "from_step": stage.step, "to_step": steps, "mix": mix_record}) + "\n")
    rng = np.random.default_rng([seed, stage.step])  # a resumed run draws fresh pairs
    bar = tqdm(total=steps, initial=stage.step, desc="rewriter sft")
    while not stage.done:
        batch = [mix.pair(rng) for _ in range(batch_size)]
        loss = mle_loss(rewriter, [p for p, _ in batch], [t for _, t in batch])
        stage.update(loss)
        show(bar, stage.record(loss=loss))
        bar.update(1)
        if stage.step % checkpoint_every == 0 or stage.done:
            stage.save_state()
    bar.close()
    rewriter.model.eval()
    metrics = {**text_metrics(rewriter), "final_loss": float(loss.item()) if steps > 0 else None}
    model = rewriter.model
    extra = {
        "stage": "sft",
        "model": {"class": "T5ForConditionalGeneration", **MINI_T5, "vocabulary": f"MiniLM WordPiece ({len(tokenizer)} pieces)", "embeddings": f"MiniLM word embeddings on their top {semantic_dims} principal axes (frozen) + {MINI_T5['d_model'] - semantic_dims} trained columns",
                  "parameters": sum(p.numel() for p in model.parameters()), "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "runs": read_jsonl(work_dir / SFT_RUNS),
        "data": {**mix_record, "pairs_seen": steps * batch_size, "novel_words": len(words),
                 "teacher": {"min_similarity": TEACHER_MIN_SIMILARITY, "min_margin": TEACHER_MIN_MARGIN, "words_per_scene": {k: len(v) for k, v in teacher.items()}, "file": TEACHER_WORDS}},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / TEACHER_WORDS).write_text(json.dumps(teacher, indent=1) + "\n")
    _save(rewriter, out, command, seed, metrics, extra)
    return metrics


# ----------------------------------------------------------------------------- stage: feedback
def feedback_prompts(n: int, seed: int, teacher: dict[str, list[str]] | None, teacher_share: float = 0.5) -> list[tuple[str, str]]:
    """(user prompt, scene id) for the feedback stage: training descriptions and (share `teacher_share`, when
    the rewriter came with teacher words) descriptions made from teacher words, as in SFT."""
    rng = np.random.default_rng([seed, 17])
    training = open_prompts(heldout=False)
    out = []
    for _ in range(n):
        scene = SCENES[int(rng.integers(len(SCENES)))]
        if teacher and teacher.get(scene.id) and rng.random() < teacher_share:
            out.append((teacher_description(rng, teacher[scene.id]), scene.id))
        else:
            prompt = training[int(rng.integers(len(training)))]
            out.append((prompt, scene_of(prompt, heldout=False).id))
    return out


def collect_feedback(rewriter: PromptRewriter, prompts: list[tuple[str, str]], generator_dir: Path, clap_dir: Path, oracle_dir: Path | None, work_dir: Path, k: int, clips_per_rewrite: int, seed: int, temperature: float, generation_steps: int | None = None, prompts_per_call: int = 4, device: str | None = None) -> list[dict]:
    """Rows {prompt, scene, seeds, greedy, candidates (unique: the greedy rewrite, then K samples in order), clap [per candidate: mean over its
    clips], events [per candidate, per clip: the oracle's; a diagnostic only, never used by the loss]} in
    work_dir/feedback.jsonl; resumable. Every candidate of a prompt is rendered from the same noise seeds, so
    candidates differ only by their text; averaging CLAP over `clips_per_rewrite` seeds judges the rewrite,
    not one lucky draw."""
    from services.clap import load_clap
    from services.generator import TangoPipeline
    from training.world.oracle import load_oracle

    path = work_dir / "feedback.jsonl"
    rows = read_jsonl(path)
    todo = list(range(len(rows), len(prompts)))
    if not todo:
        return rows
    pipe = TangoPipeline.from_pretrained(generator_dir, device=device)
    clap = load_clap(clap_dir)
    oracle = load_oracle(None if oracle_dir is None else str(oracle_dir))
    with open(path, "a") as f, tqdm(total=len(prompts), initial=len(rows), desc="feedback: sample, generate, CLAP-rank") as bar:
        for start in range(0, len(todo), prompts_per_call):
            idx = todo[start : start + prompts_per_call]
            user = [prompts[i][0] for i in idx]
            sampled = rewriter.sample(user, k, temperature=temperature, seed=seed * 100_003 + idx[0])
            # the greedy rewrite (what serving would send) competes too: the ranking then moves the model off its
            # own best guess only where CLAP prefers a sample to it
            greedy = rewriter.greedy_outputs(user)
            # candidates as the model wrote them (the ranking loss scores these), the generator hears them resolved
            cands = [list(dict.fromkeys(c for c in [g, *s] if c.strip())) for g, s in zip(greedy, sampled)]
            noise = {i: [(seed * 1000 + i) * 8 + c for c in range(clips_per_rewrite)] for i in idx}
            texts = [resolve(u, c) for u, cs in zip(user, cands) for c in cs for _ in range(clips_per_rewrite)]
            seeds = [s for i, cs in zip(idx, cands) for _ in cs for s in noise[i]]
            audio = pipe.generate(texts, num_candidates=1, seed=seeds, steps=generation_steps).waveforms[:, 0]
            judged = [u for u, cs in zip(user, cands) for _ in cs for _ in range(clips_per_rewrite)]
            scores = clap.score(judged, audio, pipe.sample_rate).reshape(-1, clips_per_rewrite)
            detected = [sorted(d.present()) for d in oracle.detect(audio)]
            pos = 0
            for i, u, g, cs in zip(idx, user, greedy, cands):
                n = len(cs)
                events = [detected[(pos + c) * clips_per_rewrite : (pos + c + 1) * clips_per_rewrite] for c in range(n)]
                row = {"i": i, "prompt": u, "scene": prompts[i][1], "seeds": noise[i], "greedy": g, "candidates": cs, "clap": [float(x) for x in scores[pos : pos + n].mean(1)], "events": events}
                f.write(json.dumps(row) + "\n")
                rows.append(row)
                pos += n
            f.flush()
            bar.update(len(idx))
    return rows


def feedback_diagnostics(rows: list[dict]) -> dict[str, float]:
    """How far the CLAP ranking agrees with the oracle's scene consistency among one prompt's
    candidates (the paper assumes CLAP is a good judge; this measures it), and the spread it ranks."""
    agree, pairs, best_cons, mean_cons, greedy_cons = 0, 0, [], [], []
    for row in rows:
        scene = SCENE_BY_ID[row["scene"]]
        cons = [float(np.mean([sum(e in scene.events for e in ev) / len(ev) if ev else 0.0 for ev in clips])) for clips in row["events"]]
        mean_cons.append(np.mean(cons))
        best_cons.append(cons[int(np.argmax(row["clap"]))])
        if "greedy" in row:  # rows collected since the greedy rewrite became candidate 0
            greedy_cons.append(cons[0])
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
        **({"scene_consistency_greedy": float(np.mean(greedy_cons))} if greedy_cons else {}),
    }


def train_feedback(
    init: Path, out: Path, steps: int, batch_size: int, lr: float, margin: float, mle_weight: float, passthrough_weight: float, n_prompts: int, k: int, temperature: float, seed: int, work_dir: Path,
    generator_dir: Path, clap_dir: Path, oracle_dir: Path | None, checkpoint_every: int, device: str | None, command: str | None = None, generation_steps: int | None = None, clips_per_rewrite: int = 2, min_judge_gap: float = 0.1,
) -> dict:
    device = pick_device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    rewriter = freeze_embeddings(PromptRewriter.from_pretrained(init, device=device))  # a small fine-tune leaves the vocabulary where it is
    teacher = load_teacher_words(init)  # our mini rewriters carry them; a real FLAN-T5 knows its words already
    mix = SftMix(novel_words=tuple(vocabulary_words(rewriter.tokenizer)) if teacher else ())  # for the pass-through pairs
    prompts = feedback_prompts(n_prompts, seed, teacher)
    rows = collect_feedback(rewriter, prompts, generator_dir, clap_dir, oracle_dir, work_dir, k, clips_per_rewrite, seed, temperature, generation_steps, device=str(device))
    order = [sorted(range(len(r["clap"])), key=lambda c: -r["clap"][c]) for r in rows]  # best first
    ranked = [[r["candidates"][c] for c in o] for r, o in zip(rows, order)]
    judged = [[r["clap"][c] for c in o] for r, o in zip(rows, order)]
    # a prompt teaches something only when CLAP separates its best rewrite from its worst
    usable = [i for i, s in enumerate(judged) if len(s) >= 2 and s[0] - s[-1] >= min_judge_gap]
    if not usable:
        raise ValueError(f"no feedback prompt has two rewrites CLAP scores at least {min_judge_gap} apart; raise --k or --temperature, or lower --min-judge-gap")
    rewriter.model.train()
    stage = Stage("feedback", rewriter.model, work_dir, steps, lr, warmup=20, flush_every=10)
    rng = np.random.default_rng([seed, stage.step])
    bar = tqdm(total=steps, initial=stage.step, desc="rewriter feedback")
    while not stage.done:
        pick = rng.choice(usable, size=min(batch_size, len(usable)), replace=False)
        users, cands = [rows[i]["prompt"] for i in pick], [ranked[i] for i in pick]
        scores, valid = rewriter.sequence_scores(users, cands)
        judge = torch.tensor([judged[i] + [0.0] * (scores.shape[1] - len(judged[i])) for i in pick], device=scores.device)
        rank = ranking_loss(scores, valid, margin, judge, min_judge_gap)
        best = mle_loss(rewriter, users, [c[0] for c in cands])
        keep = passthrough_pairs(batch_size, int(rng.integers(2**31)), mix)
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
        "ranking": {"judge": f"CLAP(user prompt, clip) with {checkpoint_version(clap_dir)}", "generator": checkpoint_version(generator_dir), "prompts": n_prompts, "teacher_prompts": sum(p not in open_prompts(heldout=False) for p, _ in prompts), "k": k, "candidates": "greedy rewrite + k samples, unique", "clips_per_rewrite": clips_per_rewrite, "temperature": temperature, "generation_steps": generation_steps or "generator default", "margin": margin, "min_judge_gap": min_judge_gap, "prompts_ranked": len(usable), "mle_weight": mle_weight, "passthrough_weight": passthrough_weight},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback_log.jsonl").write_text((stage.dir / "log.jsonl").read_text())  # the curves travel with the weights
    if teacher is not None:
        (out / TEACHER_WORDS).write_text(json.dumps(teacher, indent=1) + "\n")
    _save(rewriter, out, command, seed, metrics, extra)
    return metrics

