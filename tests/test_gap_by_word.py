"""scripts/gap_by_word.py and scripts/paired_by_novelty.py: charging a wrong clip to what it got wrong, and reading eval sets."""

from __future__ import annotations

import importlib.util
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


def test_paired_by_novelty_reads_the_sample_from_the_set_name_and_refuses_ambiguity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "scripts"))
    paired = _load_script("paired_by_novelty")
    (tmp_path / "a" / "integrity-n60-k4").mkdir(parents=True)
    (tmp_path / "b" / "temporal-n30-k8-seed3").mkdir(parents=True)
    assert paired.candidate_set(tmp_path / "a", "integrity")[1:] == (60, 4, 1)
    assert paired.candidate_set(tmp_path / "b", "temporal")[1:] == (30, 8, 3)
    (tmp_path / "a" / "integrity-n60-k4-seed2").mkdir()
    with pytest.raises(SystemExit, match="expected one integrity"):
        paired.candidate_set(tmp_path / "a", "integrity")
