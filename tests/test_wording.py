"""Known wording (services.wording): a judge reads each clause of a prompt in the phrasings it was trained on,
when MiniLM places the clause close to one sound's phrasing; the shipped wording holds no held-out phrasing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.checkpoints import shipped
from services.modeling import CheckpointError
from services.wording import REWORD_CACHE_SIZE, WORDING_NAME, InKnownWords, KnownWording, KnownWordingConfig


@pytest.fixture(scope="module")
def wording() -> KnownWording:
    return KnownWording(KnownWordingConfig(phrasings={"dog": ["a dog barks", "a barking dog"], "bell": ["a bell rings"], "rain": ["rain falls"]}))


def test_close_clauses_take_the_known_phrasing_and_the_rest_of_the_prompt_stays(wording):
    # every clause replaced, the connectives and the order as written
    assert wording.reword("first a puppy barks, then a church bell tolls, and then it is raining") == "first a dog barks, then a bell rings, and then rain falls"
    assert wording.reword("a barking dog while heavy rain pours") == "a barking dog while rain falls"
    # known words are kept; a clause close to no sound keeps its own words, and so does an empty prompt
    assert wording.reword("a bell rings") == "a bell rings"
    assert wording.reword("waves crash on a beach") == "waves crash on a beach"
    assert wording.reword("") == ""
    assert wording(["a puppy barks", "a bell rings"]) == ["a dog barks", "a bell rings"]


def test_the_rewording_cache_keeps_only_the_most_recent_texts(wording, monkeypatch):
    fresh = KnownWording(wording.config, wording.encoder)
    monkeypatch.setattr("services.wording.REWORD_CACHE_SIZE", 2)
    for text in ("a puppy barks", "it is raining", "a puppy barks", "a church bell tolls"):
        fresh.reword(text)
    # the least recently used text ("it is raining") went; a text asked for again is still reworded the same
    assert list(fresh._cache) == ["a puppy barks", "a church bell tolls"]
    assert fresh.reword("it is raining") == "rain falls" and len(fresh._cache) == 2
    fresh.clear_cache()
    assert not fresh._cache and REWORD_CACHE_SIZE >= 1000


def test_a_clause_between_two_sounds_is_not_reworded(wording):
    # with no margin required the nearer sound would win; a margin no pair of sounds clears keeps every clause
    strict = KnownWording(wording.config.model_copy(update={"min_margin": 2.0}), wording.encoder)
    assert strict.reword("a puppy barks, then it is raining") == "a puppy barks, then it is raining"
    assert strict.nearest(["a bell rings"]) == ["a bell rings"]


def test_saved_wording_loads_and_a_bad_file_names_itself(tmp_path, wording):
    path = wording.save_pretrained(tmp_path)
    again = KnownWording.from_pretrained(tmp_path, wording.encoder)
    assert again.config == wording.config and again.reword("a puppy barks") == "a dog barks"
    path.write_text(json.dumps({"phrasings": {"dog": ["a dog barks"]}}))  # one sound: nothing to tell apart
    with pytest.raises(CheckpointError, match=WORDING_NAME):
        KnownWording.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tta train wording"):
        KnownWording.from_pretrained(tmp_path / "none")


def test_shipped_wording_holds_training_phrasings_only():
    from services.manifest import verify_manifest
    from training.world.captions import EVENT_PHRASINGS, heldout_fragments

    directory = shipped("wording")
    manifest = verify_manifest(directory)
    config = KnownWordingConfig.model_validate_json((directory / WORDING_NAME).read_text())
    assert config.phrasings == {e: [*p.clauses, *p.nouns] for e, p in EVENT_PHRASINGS.items()}
    held = set(heldout_fragments())
    assert not held & {t for texts in config.phrasings.values() for t in texts}
    assert manifest["metrics"]["right_sound"] >= 0.95 and manifest["command"].startswith("tta train wording")


def test_a_reranker_in_known_words_judges_the_reworded_texts(wording):
    from services.clap import load_clap
    from services.reward import ByStretch, ClapReranker, judged_by_stretch

    clap = ClapReranker(load_clap(shipped("clap")))
    known = InKnownWords(clap, wording)
    wav = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32) * 0.1
    prompt, clauses = "a puppy barks, then a church bell tolls", ["a puppy barks", "a church bell tolls"]
    np.testing.assert_allclose(known.score(prompt, wav, 16000), clap.score("a dog barks, then a bell rings", wav, 16000), atol=1e-6)
    np.testing.assert_allclose(known.score_pairs(clauses[:1] * 3, wav, 16000), clap.score_pairs(["a dog barks"] * 3, wav, 16000), atol=1e-6)
    # by stretch, each placed clause is reworded too
    staged = ByStretch(known)
    assert staged.backend == "clap-cosine+known-words+by-stretch"
    expected = judged_by_stretch(clap.score_pairs, "a dog barks, then a bell rings", wav, 16000, ["a dog barks", "a bell rings"])
    np.testing.assert_allclose(staged.score(prompt, wav, 16000, timeline=clauses), expected, atol=1e-6)
