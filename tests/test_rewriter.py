"""The prompt rewriter: template, loading from a directory, the margin ranking loss, the training data,
and a tiny end-to-end run of both training stages with the real generator, CLAP and oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.modeling import CheckpointError
from services.rewriter import INSTRUCTION, KEEP, PromptRewriter, instruction, resolve
from services.validation import MAX_PROMPT_CHARS
from training.train_rewriter import (
    TEMPLATE_WORDS,
    SftMix,
    feedback_diagnostics,
    feedback_prompts,
    freeze_embeddings,
    mini_rewriter,
    minilm_tokenizer,
    minilm_word_embeddings,
    mle_loss,
    open_prompts,
    ranking_loss,
    sft_pairs,
    teacher_scene_words,
    text_scene_consistency,
    vocabulary_words,
)
from training.world.captions import heldout_fragments, mentioned_events
from training.world.scenes import SCENE_BY_ID


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def rewriter_dir(tokenizer, tmp_path_factory):
    """A tiny random T5ForConditionalGeneration and its tokenizer, saved with save_pretrained."""
    directory = tmp_path_factory.mktemp("tiny_t5")
    mini_rewriter(tokenizer, seed=0).save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------- template
def test_instruction_wraps_the_prompt_in_the_template():
    assert instruction("a farmyard") == INSTRUCTION.format(prompt="a farmyard")
    assert instruction("  a   rainy\nstreet ") == INSTRUCTION.format(prompt="a rainy street")
    assert instruction("a farmyard").startswith("Rewrite this sound description into a detailed, literal description of the sounds and their order: ")


@pytest.mark.parametrize("bad, message", [("", "blank"), ("   ", "blank"), ("x" * (MAX_PROMPT_CHARS + 1), "at most")])
def test_instruction_refuses_bad_prompts(bad, message):
    with pytest.raises(ValueError, match=message):
        instruction(bad)


# ----------------------------------------------------------------------------- loading
def test_loads_a_t5_directory_and_rewrites(rewriter_dir, tokenizer):
    rw = PromptRewriter.from_pretrained(rewriter_dir)
    assert type(rw.model).__name__ == "T5ForConditionalGeneration"
    assert len(rw.tokenizer) == len(tokenizer)
    out = rw.rewrite(["a farmyard", "a dog barks, then a bell rings"])
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    assert rw.rewrite(["a farmyard"]) == out[:1]  # greedy: deterministic
    samples = rw.sample(["a farmyard"], k=3, seed=1)
    assert len(samples) == 1 and len(samples[0]) == 3
    assert samples == rw.sample(["a farmyard"], k=3, seed=1)


def test_save_pretrained_round_trip(rewriter_dir, tmp_path):
    rw = PromptRewriter.from_pretrained(rewriter_dir)
    again = PromptRewriter.from_pretrained(rw.save_pretrained(tmp_path / "copy"))
    prompts = ["a quiet house", "thunder rumbles"]
    assert again.rewrite(prompts) == rw.rewrite(prompts)


def test_refuses_a_directory_that_is_not_a_t5(tmp_path, rewriter_dir):
    with pytest.raises(CheckpointError, match="no config.json"):
        PromptRewriter.from_pretrained(tmp_path)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="T5-class"):
        PromptRewriter.from_pretrained(bert)


def test_refuses_a_tokenizer_larger_than_the_embedding(rewriter_dir, tmp_path):
    import shutil

    small = tmp_path / "small"
    shutil.copytree(rewriter_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["vocab_size"] = 200
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tokenizer has"):
        PromptRewriter.from_pretrained(small)


def test_sequence_scores_are_length_normalised_log_likelihoods(rewriter_dir):
    rw = PromptRewriter.from_pretrained(rewriter_dir)
    scores, valid = rw.sequence_scores(["a farmyard", "a park in spring"], [["a cow moos", "a dog barks, then a cow moos", "rain"], ["a bird sings"]])
    assert scores.shape == (2, 3) and valid.tolist() == [[True, True, True], [True, False, False]]
    assert (scores[valid] < 0).all() and (scores[~valid] == 0).all()
    # the same candidate alone scores the same: no leakage across the ragged batch
    alone, _ = rw.sequence_scores(["a park in spring"], [["a bird sings"]])
    assert torch.allclose(alone[0, 0], scores[1, 0], atol=1e-5)


# ----------------------------------------------------------------------------- ranking loss
def test_ranking_loss_is_zero_when_the_order_holds_with_margin():
    scores = torch.tensor([[-0.1, -0.5, -0.9]])
    assert ranking_loss(scores, torch.ones_like(scores, dtype=torch.bool), margin=0.1).item() == 0.0


def test_ranking_loss_charges_a_reversed_order():
    scores = torch.tensor([[-0.9, -0.5, -0.1]])  # best-ranked candidate scores lowest
    loss = ranking_loss(scores, torch.ones_like(scores, dtype=torch.bool), margin=0.0)
    # pairs (0,1): 0.4, (0,2): 0.8, (1,2): 0.4 -> mean 1.6/3
    assert loss.item() == pytest.approx(1.6 / 3)


def test_ranking_loss_margin_grows_with_rank_distance():
    scores = torch.zeros(1, 3)  # ties: each pair costs exactly margin * (j - i)
    loss = ranking_loss(scores, torch.ones_like(scores, dtype=torch.bool), margin=0.5)
    assert loss.item() == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # a gap of 0.6 satisfies a rank distance of 1 at margin 0.5, not a distance of 2
    scores = torch.tensor([[0.0, -0.6, -1.2]])
    assert ranking_loss(scores, torch.ones_like(scores, dtype=torch.bool), margin=0.5).item() == 0.0
    scores = torch.tensor([[0.0, -0.6, -0.9]])  # pair (0,2) misses by 0.1, pair (1,2) by 0.2
    assert ranking_loss(scores, torch.ones_like(scores, dtype=torch.bool), margin=0.5).item() == pytest.approx(0.3 / 3)


def test_ranking_loss_ignores_padding_slots():
    scores = torch.tensor([[-0.1, -0.5, 5.0]])
    valid = torch.tensor([[True, True, False]])
    assert ranking_loss(scores, valid, margin=0.1).item() == 0.0
    assert ranking_loss(scores, torch.tensor([[True, False, False]]), margin=0.1).item() == 0.0


def test_ranking_loss_skips_pairs_the_judge_barely_separates():
    scores = torch.tensor([[-0.9, -0.5, -0.1]])  # every pair reversed
    valid = torch.ones_like(scores, dtype=torch.bool)
    judge = torch.tensor([[0.60, 0.58, 0.20]])  # the judge's near-tie (0, 1) is left out; (0, 2) and (1, 2) count
    assert ranking_loss(scores, valid, 0.0, judge, min_judge_gap=0.1).item() == pytest.approx((0.8 + 0.4) / 2)
    assert ranking_loss(scores, valid, 0.0, judge, min_judge_gap=0.0).item() == pytest.approx(1.6 / 3)
    assert ranking_loss(scores, valid, 0.0, judge, min_judge_gap=0.5).item() == 0.0


def test_ranking_loss_steps_teach_the_model_the_order(rewriter_dir):
    """A few steps on the ranking loss alone raise the best candidate's score over the worst."""
    rw = PromptRewriter.from_pretrained(rewriter_dir)
    rw.model.train()
    prompts, cands = ["a farmyard"], [["a cow moos, then a dog barks", "a bird sings", "a siren wails"]]
    opt = torch.optim.Adam(rw.model.parameters(), lr=1e-3)
    with torch.no_grad():
        before, _ = rw.sequence_scores(prompts, cands)
    for _ in range(20):
        scores, valid = rw.sequence_scores(prompts, cands)
        loss = ranking_loss(scores, valid, margin=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, valid = rw.sequence_scores(prompts, cands)
    assert (after[0, 0] - after[0, 2]) > (before[0, 0] - before[0, 2])
    assert ranking_loss(after, valid, 0.1) < ranking_loss(before, valid, 0.1)


# ----------------------------------------------------------------------------- data
TEACHER = {scene: ["church", "square"] if scene == "village_church" else ["farm"] for scene in SCENE_BY_ID}


def test_sft_pairs_never_hold_heldout_descriptions_or_phrasings(tokenizer):
    mix = SftMix(passthrough=0.3, teacher=TEACHER, teacher_share=0.5, novel_words=tuple(vocabulary_words(tokenizer)), novel_word_rate=0.5)
    pairs = sft_pairs(3000, seed=0, mix=mix)
    heldout = set(open_prompts(heldout=True))
    assert not heldout & {p for p, _ in pairs}
    text = " ".join(t for pair in pairs for t in pair)
    assert not [f for f in heldout_fragments() if f in text]
    passthrough = [p for p, t in pairs if t == KEEP]
    assert 0.25 < len(passthrough) / len(pairs) < 0.35
    assert all(mentioned_events(t) for p, t in pairs if t != KEEP)  # every rewrite target names its sounds
    made_up = [p for p, t in pairs if t != KEEP and p not in open_prompts(heldout=False)]
    assert 0.4 < len(made_up) / (len(pairs) - len(passthrough)) < 0.6  # teacher_share of the scene pairs
    assert {w for p in made_up for w in p.split()} <= {"a", "the", "near", "and", "by", "at", "church", "square", "farm"}


def test_novel_words_swap_one_non_template_word_and_skip_heldout_phrasings(tokenizer):
    words = vocabulary_words(tokenizer)
    assert len(words) > 15_000 and "hound" not in words and "yaps" not in words  # held-out phrasings stay unseen
    mix = SftMix(passthrough=1.0, novel_words=("zebra",), novel_word_rate=1.0)
    plain = SftMix(passthrough=1.0)
    for seed in range(200):  # the same draws up to the swap
        (p, t), (q, _) = mix.passthrough_pair(np.random.default_rng(seed)), plain.passthrough_pair(np.random.default_rng(seed))
        assert t == KEEP  # still a pass-through pair
        changed = [(a, b) for a, b in zip(p.split(" "), q.split(" ")) if a != b]
        assert len(changed) <= 1 and all(a.strip(",;") == "zebra" and b.strip(",;") not in TEMPLATE_WORDS for a, b in changed)


def test_teacher_words_follow_minilm_sentence_similarity():
    teacher = teacher_scene_words(["chapels", "farmer", "soccer", "algebra", "thunder"])
    assert teacher["village_church"] == ["chapels"] and teacher["farmyard"] == ["farmer"] and teacher["sports_field"] == ["soccer"]
    labelled = {w for ws in teacher.values() for w in ws}
    assert "algebra" not in labelled  # near no scene: no label
    assert "thunder" not in labelled  # a caption word: captions are passed through, never made into scenes


def test_feedback_prompts_mix_training_and_teacher_descriptions():
    prompts = feedback_prompts(200, seed=0, teacher=TEACHER)
    training = [p for p, _ in prompts if p in open_prompts(heldout=False)]
    assert 0.3 < len(training) / len(prompts) < 0.7
    assert all(scene in SCENE_BY_ID for _, scene in prompts)
    assert feedback_prompts(200, seed=0, teacher=TEACHER) == prompts
    assert all(p in open_prompts(heldout=False) for p, _ in feedback_prompts(50, seed=0, teacher=None))


# ----------------------------------------------------------------------------- tokenizer and embeddings
def test_minilm_tokenizer_uses_t5_conventions(tokenizer):
    ids = tokenizer("a dog barks, then a bell rings")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.cls_token_id not in ids and tokenizer.pad_token_id == 0
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a dog barks, then a bell rings"
    assert tokenizer.decode(tokenizer("the yapping of a hound")["input_ids"], skip_special_tokens=True) == "the yapping of a hound"


def test_keep_is_one_token_that_decodes_intact(tokenizer):
    ids = tokenizer(KEEP)["input_ids"]
    assert ids == [len(tokenizer) - 1, tokenizer.eos_token_id]  # the one token added to MiniLM's 30522
    assert tokenizer.decode(ids, skip_special_tokens=True) == KEEP
    assert len(tokenizer) - 1 not in tokenizer("keep the dog")["input_ids"]  # the plain word is not the answer KEEP


def test_resolve_turns_keep_into_the_prompt():
    assert resolve("a dog  barks, then a bell rings", KEEP) == "a dog barks, then a bell rings"
    assert resolve("a farmyard", "") == "a farmyard"  # a degenerate empty answer never reaches the generator
    assert resolve("a farmyard", "a cow moos") == "a cow moos"


def test_a_rewriter_that_answers_keep_passes_the_prompt_through_exactly(tokenizer):
    """A few steps on caption -> KEEP pairs, and rewrite() hands back the caption itself, character for character,
    while the answer as the model wrote it (what the feedback stage ranks) stays KEEP."""
    rw = mini_rewriter(tokenizer, seed=0)
    rw.model.train()
    caption = "first a car horn honks, then a bell rings, and then a dog barks"
    opt = torch.optim.Adam([p for p in rw.model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(25):
        loss = mle_loss(rw, [caption], [KEEP])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rw.model.eval()
    assert rw.greedy_outputs([caption]) == [KEEP]
    assert rw.rewrite([caption]) == [caption]
    scores, _ = rw.sequence_scores([caption], [[KEEP, caption]])
    assert scores[0, 0] > scores[0, 1]  # the answer it learnt outscores copying


def test_mini_rewriter_embeddings_keep_minilm_columns_frozen_and_train_the_rest(tokenizer, tmp_path):
    from training.train_generator import Stage

    dims = 96  # the v3 recipe: 96 MiniLM columns, 32 trained
    rw = mini_rewriter(tokenizer, seed=0, semantic_dims=dims)
    table = rw.model.get_input_embeddings().weight
    minilm = table[: len(tokenizer) - 1]  # the last row is KEEP's
    assert torch.equal(minilm, minilm_word_embeddings(table.shape[1], dims))
    assert torch.equal(minilm[:, :dims], minilm_word_embeddings(dims))  # the same axes, unit RMS
    assert (minilm[:, dims:] == 0).all()
    assert rw.model.get_output_embeddings().weight is table  # tied
    ids = tokenizer(["chapel", "church", "algebra"], add_special_tokens=False)["input_ids"]
    chapel, church, algebra = (table[i[0]] for i in ids)
    cos = torch.nn.functional.cosine_similarity
    assert cos(chapel, church, dim=0) > cos(chapel, algebra, dim=0)  # the geometry a word keeps when training never shows it
    before = table.detach().clone()
    rw.model.train()
    stage = Stage("t", rw.model, tmp_path, steps=3, lr=1e-2, warmup=1, no_decay=[table])  # as train_sft builds it
    for _ in range(3):
        stage.update(mle_loss(rw, ["a farmyard"], ["a cow moos"]))
    assert torch.equal(table[:-1, :dims], before[:-1, :dims]), "frozen columns moved (gradient or weight decay)"
    cow = tokenizer("cow", add_special_tokens=False)["input_ids"][0]
    assert not torch.equal(table[cow, dims:], before[cow, dims:])  # a word it saw learnt its own columns


def test_default_embeddings_freeze_every_minilm_entry_and_train_keep(tokenizer, tmp_path):
    from training.train_generator import Stage

    rw = mini_rewriter(tokenizer, seed=0)  # the default: all 128 columns MiniLM's, KEEP's row trained
    table = rw.model.get_input_embeddings().weight
    assert torch.equal(table[:-1], minilm_word_embeddings(128))
    before = table.detach().clone()
    rw.model.train()
    stage = Stage("t", rw.model, tmp_path, steps=2, lr=1e-2, warmup=1, no_decay=[table])
    for _ in range(2):
        stage.update(mle_loss(rw, ["a dog barks", "a farmyard"], [KEEP, "a cow moos"]))
    assert torch.equal(table[:-1], before[:-1]) and not torch.equal(table[-1], before[-1])
    assert freeze_embeddings(rw) is rw and not table.requires_grad  # what the feedback stage does: all frozen
    with pytest.raises(ValueError, match="semantic_dims"):
        minilm_word_embeddings(128, 200)


def test_mentioned_events_reads_sounds_in_text_order():
    assert mentioned_events("a cow moos, then a dog barks") == ["cow_moo", "dog_bark"]
    assert mentioned_events("a church bell tolls while rain falls") == ["bell", "rain"]
    assert mentioned_events("a thunderstorm") == []  # whole words only
    assert mentioned_events("a farmyard") == []


def test_text_scene_consistency():
    farm = SCENE_BY_ID["farmyard"]
    assert text_scene_consistency(["a cow moos, then a dog barks"], [farm]) == 1.0
    assert text_scene_consistency(["a cow moos, then a siren wails"], [farm]) == 0.5
    assert text_scene_consistency(["a farmyard"], [farm]) == 0.0


def test_feedback_diagnostics_measure_clap_oracle_agreement():
    """Consistency of a candidate is the mean over its clips; the pair agreement compares it with CLAP's order."""
    rows = [
        {"prompt": "a farmyard", "scene": "farmyard", "candidates": ["a", "b", "c"], "clap": [0.9, 0.5, 0.1], "events": [[["cow_moo"], ["cow_moo"]], [["cow_moo", "siren"], ["cow_moo"]], [["siren"], []]]},
        {"prompt": "the cow", "scene": "farmyard", "candidates": ["a", "b"], "clap": [0.1, 0.9], "events": [[["cow_moo"]], [["siren"]]]},
    ]
    d = feedback_diagnostics(rows)
    assert d["rows"] == 2
    assert d["clap_oracle_pair_agreement"] == pytest.approx(3 / 4)
    assert d["scene_consistency_clap_best"] == pytest.approx((1.0 + 0.0) / 2)
    assert d["scene_consistency_mean_candidate"] == pytest.approx(((1 + 0.75 + 0) / 3 + 0.5) / 2)
    assert "scene_consistency_greedy" not in d  # rows from before the greedy rewrite was a candidate
    d = feedback_diagnostics([{**row, "greedy": row["candidates"][0]} for row in rows])
    assert d["scene_consistency_greedy"] == pytest.approx((1.0 + 1.0) / 2)  # candidate 0 of each row


# ----------------------------------------------------------------------------- end to end
def test_tiny_sft_then_feedback_end_to_end(tmp_path):
    """Both stages through the CLI at toy size: real generator clips, ranked by the real mini CLAP."""
    from click.testing import CliRunner

    from tta.cli import main

    runner = CliRunner()
    sft = tmp_path / "sft"
    result = runner.invoke(main, ["train", "rewriter", "--stage", "sft", "--out", str(sft), "--steps", "3", "--batch-size", "4", "--work-dir", str(tmp_path / "w_sft")])
    assert result.exit_code == 0, result.output
    assert json.loads((sft / "MANIFEST.json").read_text())["stage"] == "sft"
    # resumed with another mix: the manifest lists both invocations, so the recipe stays reproducible
    result = runner.invoke(main, ["train", "rewriter", "--stage", "sft", "--out", str(sft), "--steps", "4", "--batch-size", "4", "--novel-word-rate", "0.5", "--work-dir", str(tmp_path / "w_sft")])
    assert result.exit_code == 0, result.output
    runs = json.loads((sft / "MANIFEST.json").read_text())["runs"]
    assert [(r["from_step"], r["to_step"]) for r in runs] == [(0, 3), (3, 4)]
    assert runs[0]["mix"]["novel_word_rate"] == 0.0 and runs[1]["mix"]["novel_word_rate"] == 0.5

    fb = tmp_path / "fb"
    args = ["train", "rewriter", "--stage", "feedback", "--init", str(sft), "--out", str(fb), "--steps", "2", "--batch-size", "2", "--n-prompts", "2", "--k", "3", "--clips-per-rewrite", "2", "--generation-steps", "4", "--min-judge-gap", "0", "--work-dir", str(tmp_path / "w_fb")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "w_fb" / "feedback.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert [(r["prompt"], r["scene"]) for r in rows] == feedback_prompts(2, 0, json.loads((sft / "teacher_words.json").read_text()))
    for row in rows:
        assert row["candidates"][0] == row["greedy"] and len(row["candidates"]) <= 4  # greedy + k=3 samples, unique
        assert len(row["clap"]) == len(row["candidates"]) == len(row["events"])
        assert all(len(clips) == 2 for clips in row["events"]) and len(set(row["seeds"])) == 2
    manifest = json.loads((fb / "MANIFEST.json").read_text())
    assert manifest["stage"] == "feedback" and manifest["init"].startswith("sft@") and manifest["ranking"]["min_judge_gap"] == 0.0
    assert "rank" in (fb / "feedback_log.jsonl").read_text()
    rw = PromptRewriter.from_pretrained(fb)
    assert len(rw.rewrite(["a farmyard"])) == 1

    # resumed: the cached feedback rows are reused, training goes on from its saved step
    result = runner.invoke(main, [*args[:-2], "--steps", "3", "--work-dir", str(tmp_path / "w_fb")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "w_fb" / "feedback.jsonl").read_text().splitlines()) == 2
    assert "resumed from" in result.output
    # CLAP scores are cosines: no two rewrites are 3 apart, so nothing is left to rank, and it says so
    result = runner.invoke(main, [*args[:-2], "--min-judge-gap", "3", "--work-dir", str(tmp_path / "w_fb")])
    assert result.exit_code != 0 and "at least 3.0 apart" in result.output


def test_feedback_stage_needs_init(tmp_path):
    from click.testing import CliRunner

    from tta.cli import main

    result = CliRunner().invoke(main, ["train", "rewriter", "--stage", "feedback", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--init" in result.output


# ----------------------------------------------------------------------------- evaluation
def test_scene_consistency_counts_detected_events_in_the_scene():
    from training.eval_rewriter import scene_consistency

    farm = set(SCENE_BY_ID["farmyard"].events)
    values = scene_consistency([{"cow_moo"}, {"cow_moo", "siren"}, set(), {"siren"}], [farm] * 4)
    assert values.tolist() == [1.0, 0.5, 0.0, 0.0]  # silence is not a farmyard


def test_standard_error_treats_the_prompt_as_the_unit():
    from training.eval_rewriter import prompt_standard_error

    # two prompts x 2 clips: prompt means 0.5 and 1.0 -> std 0.354, s.e. 0.25; clip spread within a prompt does not count
    assert prompt_standard_error(np.array([0.0, 1.0, 1.0, 1.0]), seeds=2) == pytest.approx(0.25)
    assert prompt_standard_error(np.array([0.2, 0.2, 0.2, 0.2]), seeds=2) == 0.0


def test_rewriter_table_and_markdown_name_every_row_and_column():
    from training.eval_rewriter import COLUMNS, RowResult, rewriter_markdown, rewriter_table

    metrics = {"clap": 0.1, "clap_se": 0.01, "scene_consistency": 0.5, "scene_consistency_se": 0.04, "bleu": 3.0, "passthrough_bleu_train": 99.0, "passthrough_bleu_heldout": 20.0, "rewrite_ms": 12.0}
    results = {row: RowResult(dict(metrics), [("a farmyard", "a cow moos")]) for row in ("raw", "sft", "feedback")}
    table = rewriter_table(results)
    assert {f"{row}.{col}" for row in results for col in COLUMNS} <= set(table)
    text = rewriter_markdown(results, "clap@x")
    assert "| feedback | 0.1000 ± 0.0100 | 0.500 ± 0.040 | 3.0 | 99.0 / 20.0 | 12.0 |" in text
    assert "'a farmyard' -> 'a cow moos'" in text


def test_paired_differences_remove_the_spread_the_rows_share():
    """Two rows that differ by +0.1 on every prompt: the paired s.e. is 0 though each row's own spread is large."""
    from training.eval_rewriter import RowResult, paired_differences, rewriter_table

    base = np.array([0.1, 0.9, 0.4, 0.7])
    rows = {name: RowResult({}, [], {"clap": base + shift, "scene_consistency": base + 2 * shift}) for name, shift in (("raw", 0.0), ("sft", 0.1), ("feedback", 0.1))}
    paired = paired_differences(rows)
    assert paired["sft-raw.clap"] == pytest.approx(0.1) and paired["sft-raw.clap_se"] == pytest.approx(0.0, abs=1e-12)
    assert paired["sft-raw.scene_consistency"] == pytest.approx(0.2) and paired["feedback-sft.clap"] == pytest.approx(0.0)
    assert rewriter_table(rows)["feedback-sft.scene_consistency_se"] == pytest.approx(0.0, abs=1e-12)
    del rows["raw"]
    assert set(paired_differences(rows)) == {"feedback-sft.clap", "feedback-sft.clap_se", "feedback-sft.scene_consistency", "feedback-sft.scene_consistency_se"}
