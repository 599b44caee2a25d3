"""Teacher words for events, and BATON feedback prompts worded with them: never a held-out word or a form of
one, near the event MiniLM puts them near, and prompts that keep the training prompts' events and relations."""

from __future__ import annotations

import json
import re

import pytest

from training.build_dataset import BuildSettings, DatasetError, _prepare, compose_prompts
from training.teacher_words import heldout_words, minilm_vocabulary, shares_heldout_stem, teacher_event_words
from training.world.captions import EVENT_PHRASINGS, mentioned_events


def test_heldout_words_and_their_forms_never_enter_the_vocabulary():
    banned = heldout_words()
    assert {"hound", "yaps", "trills", "mews"} <= banned
    for form in ("yap", "yapping", "hounds", "mewing", "trilling", "heifers"):
        assert shares_heldout_stem(form, banned), form
    for word in ("canine", "puppy", "sparrow", "guitarist"):
        assert not shares_heldout_stem(word, banned), word
    vocabulary = minilm_vocabulary()
    assert len(vocabulary) > 15_000 and "canine" in vocabulary
    assert not [w for w in vocabulary if w in banned or shares_heldout_stem(w, banned)]


def test_teacher_words_go_to_the_event_minilm_puts_them_near():
    teacher = teacher_event_words(["canine", "sparrow", "guitarist", "algebra", "thunder", "yapping"])
    assert teacher["dog_bark"] == ["canine"] and teacher["bird_chirp"] == ["sparrow"] and teacher["guitar"] == ["guitarist"]
    labelled = {w for words in teacher.values() for w in words}
    assert "algebra" not in labelled  # near no event
    assert "thunder" not in labelled  # a caption word already means its event
    assert "yapping" not in labelled  # a form of the held-out "yaps", even when offered
    assert set(teacher) == set(EVENT_PHRASINGS)


TEACHER = {e: [f"{e.split('_')[0]}oid"] for e in EVENT_PHRASINGS}  # made-up words: the test is about composition


@pytest.mark.parametrize("task", ["integrity", "temporal"])
def test_teacher_worded_prompts_keep_the_training_events_and_relations(task):
    from services.timeline import parse_timeline

    plain = compose_prompts(task, 40, seed=3)
    worded = compose_prompts(task, 40, seed=3, wording="teacher", teacher_words=TEACHER)
    for p, w in zip(plain, worded):
        assert (w.events, w.relation) == (p.events, p.relation)  # the same draws, worded otherwise
        assert mentioned_events(w.prompt) == [], f"a training phrasing left in {w.prompt!r}"
        assert set(re.findall(r"[a-z]+oid", w.prompt)) == {TEACHER[e][0] for e in w.events}
        if w.relation == "sequence":  # the generator's timeline still splits them into one clause per event
            assert len(parse_timeline(w.prompt) or []) == len(w.events), w.prompt
    with pytest.raises(ValueError, match="unknown wording"):
        compose_prompts(task, 1, wording="novel")


def test_a_build_records_its_wording_and_older_builds_resume(tmp_path):
    prompts = compose_prompts("integrity", 2)
    settings = BuildSettings(task="integrity", clips_per_prompt=2, seed=0, generator="tiny@test")
    _prepare(tmp_path, prompts, settings)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["wording"] == "training"
    del meta["wording"]  # as a build from before the option wrote it
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    _prepare(tmp_path, prompts, settings)  # resumes: the missing key had its default
    with pytest.raises(DatasetError, match="wording"):
        _prepare(tmp_path, prompts, BuildSettings(task="integrity", clips_per_prompt=2, seed=0, generator="tiny@test", wording="teacher"))


def test_cli_refuses_a_wording_for_a_prompt_file(tmp_path):
    from click.testing import CliRunner

    from tta.cli import main

    path = tmp_path / "p.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in compose_prompts("integrity", 2)))
    result = CliRunner().invoke(main, ["data", "build", "--task", "integrity", "--prompts", str(path), "--wording", "teacher", "--out", str(tmp_path / "ds")])
    assert result.exit_code != 0 and "applies to composed prompts" in result.output and not (tmp_path / "ds").exists()
