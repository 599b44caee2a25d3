"""scripts/gap_by_word.py and scripts/paired_by_novelty.py: charging a wrong clip to what it got wrong, and reading eval sets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from training.world.captions import EVENT_PHRASINGS


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gap_by_word = _load_script("gap_by_word")


def test_missing_sounds_share_the_fault_equally_and_keep_their_held_out_phrasing() -> None:
    events = ["dog_bark", "cat_meow", "car_horn"]
    named = {"dog_bark": "a hound yaps"}
    charges = gap_by_word.what_went_wrong(events, named, heard={"car_horn", "bird_chirp"})
    assert charges == [(("dog_bark", "a hound yaps"), 0.5), (("in training words", "cat_meow"), 0.5)]
    assert sum(share for _, share in charges) == pytest.approx(1.0)


def test_an_unprompted_sound_is_charged_only_when_nothing_prompted_is_missing() -> None:
    events = ["dog_bark", "cat_meow"]
    assert gap_by_word.what_went_wrong(events, {}, heard={"cat_meow", "dog_bark", "rain", "bird_chirp"}) == [(("unprompted", "bird_chirp,rain", False), 1.0)]
    assert gap_by_word.what_went_wrong(events, {"cat_meow": "x"}, heard={"cat_meow", "dog_bark", "rain"}) == [(("unprompted", "rain", True), 1.0)]


def test_a_wrong_clip_with_exactly_the_prompted_sounds_is_out_of_order() -> None:
    assert gap_by_word.what_went_wrong(["dog_bark", "cat_meow"], {}, heard={"cat_meow", "dog_bark"}) == [(("all heard", "out of order"), 1.0)]


def test_held_out_phrasings_are_found_by_clause_or_noun_and_training_phrasings_are_not() -> None:
    dog, cat = EVENT_PHRASINGS["dog_bark"], EVENT_PHRASINGS["cat_meow"]
    prompt = f"{dog.heldout_nouns[0]}, then {cat.clauses[0]}"
    named = gap_by_word.named_heldout_phrasings(prompt, ["dog_bark", "cat_meow"], [dog.heldout_clauses[0], cat.clauses[0]], [dog.heldout_nouns[0], cat.nouns[0]])
    assert named == [("dog_bark", dog.heldout_nouns[0])]
    training_only = f"{dog.clauses[0]} and {cat.clauses[0]}"
    assert gap_by_word.named_heldout_phrasings(training_only, ["dog_bark", "cat_meow"], [dog.clauses[0], cat.clauses[0]], [dog.nouns[0], cat.nouns[0]]) == []


def _candidate_set(directory: Path, task: str, n: int, seed: int, labels: list[list[int]]) -> Path:
    """A held-out candidate set as `tta eval baton` writes it: K records per prompt, oracle labels, dataset.json."""
    from training.annotation import AnnotationRecord, Provenance, write_annotations
    from training.eval_generator import prompt_of
    from training.eval_rerank import heldout_task_specs

    directory.mkdir(parents=True)
    specs = heldout_task_specs(task, n, seed)
    records = [
        AnnotationRecord(prompt=prompt_of(s).prompt, audio=f"audio/{i}_{j}.wav", task=task, label=label, annotator="simulated", provenance=Provenance(source="simulated", oracle_label=label))
        for i, (s, row) in enumerate(zip(specs, labels)) for j, label in enumerate(row)
    ]
    write_annotations(directory / "records.jsonl", records)
    (directory / "dataset.json").write_text(json.dumps({"task": task, "seed": seed, "clips_per_prompt": len(labels[0])}))
    return directory


def test_paired_by_novelty_groups_each_prompt_once_and_refuses_sets_that_do_not_pair(tmp_path: Path) -> None:
    from training.eval_baton import paired_candidate_sets, paired_difference
    from training.eval_generator import uses_novel_words
    from training.eval_rerank import heldout_task_specs

    paired = _load_script("paired_by_novelty")
    n, seed = 12, 2
    a = _candidate_set(tmp_path / "a" / "integrity-n12-k2-seed2", "integrity", n, seed, [[1, 1]] * n)
    _candidate_set(tmp_path / "b" / "integrity-n12-k2-seed2", "integrity", n, seed, [[1, 0]] * (n // 2) + [[0, 0]] * (n // 2))
    groups = paired.prompt_groups(a)
    assert len(groups) == n and set(groups) <= set(paired.GROUPS)
    # held-out words come first: every prompt naming a held-out word is in that group whatever else it holds
    assert [g == "held-out words" for g in groups] == [uses_novel_words(s) for s in heldout_task_specs("integrity", n, seed)]
    [(directory, task, labels_a, labels_b)] = paired_candidate_sets(tmp_path / "a", tmp_path / "b")
    assert (directory, task) == (a, "integrity") and labels_a.mean() == 1.0 and labels_b.mean() == 0.25
    assert paired_difference([(tmp_path / "a", tmp_path / "b")])["integrity"]["delta"] == pytest.approx(0.75)
    # per group: B is right on half a prompt's clips in the first half, on none in the second; A on all of them
    sums = paired.group_sums([(tmp_path / "a", tmp_path / "b")] * 2)["integrity"]  # the same sample twice counts twice
    expected_b = {g: 0.0 for g in set(groups)}
    for i, g in enumerate(groups):
        expected_b[g] += 2 * (0.5 if i < n // 2 else 0.0)
    assert {g: c for g, (c, _, _) in sums.items()} == {g: 2 * groups.count(g) for g in set(groups)}
    assert {g: b for g, (_, b, _) in sums.items()} == pytest.approx(expected_b)
    assert {g: a for g, (c, _, a) in sums.items()} == {g: float(c) for g, (c, _, _) in sums.items()}
    _candidate_set(tmp_path / "c" / "integrity-n12-k2-seed2", "integrity", n, seed + 1, [[1, 1]] * n)  # another seed's prompts
    with pytest.raises(ValueError, match="different prompts"):
        paired_candidate_sets(tmp_path / "a", tmp_path / "c")
