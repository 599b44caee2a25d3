"""Clause channels: every caption of the world splits into one clause per event, each token carries its
clause's pooled state, and a UNet widened for them starts out generating exactly what it did."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.clauses import clause_states, mean_pooled, split_clauses
from services.text_encoder import MINILM, TextEncoder
from training.world import captions as cap
from training.world.captions import EVENT_PHRASINGS, mentioned_events


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder.from_pretrained(MINILM, 32)


def _world_captions():
    """Every template (training and held-out) with events named by training and by held-out phrasings."""
    events = list(EVENT_PHRASINGS)
    for relation, k in (("single", 1), ("overlap", 2), ("sequence", 2), ("sequence", 3)):
        for heldout, template in ((h, t) for h in (False, True) for t in cap.templates_for(relation, k, h)):
            for shift in range(0, len(events), 5):
                chosen = [events[(shift + 3 * j) % len(events)] for j in range(k)]
                p = [EVENT_PHRASINGS[e] for e in chosen]
                clauses = [(x.heldout_clauses if heldout else x.clauses)[0] for x in p]
                nouns = [(x.heldout_nouns if heldout else x.nouns)[0] for x in p]
                yield cap.render_caption(template, clauses, nouns), chosen


def test_every_world_caption_splits_into_one_clause_per_event():
    seen = 0
    for caption, events in _world_captions():
        clauses = split_clauses(caption)
        assert sorted(e for c in clauses for e in mentioned_events(c.text)) == sorted(events), (caption, [c.text for c in clauses])
        assert all(len(mentioned_events(c.text)) == 1 for c in clauses), (caption, [c.text for c in clauses])
        assert all(caption[c.start : c.end] == c.text for c in clauses)
        seen += 1
    assert seen > 40
    assert split_clauses("") == [] and split_clauses(" , ") == []


def test_tokens_carry_their_clause_pooled_alone(text_encoder):
    texts = ["a dog barks while rain falls", "", "the sound of a ringing bell"]
    states = clause_states(text_encoder, texts)
    hidden, mask = text_encoder(texts)
    assert states.shape == hidden.shape
    dog, rain, bell = mean_pooled(text_encoder, ["a dog barks", "rain falls", "the sound of a ringing bell"])
    spans = text_encoder.token_spans(texts)
    for i, text in enumerate(texts):
        for k in range(states.shape[1]):
            a, b = (int(x) for x in spans[i, k])
            word = text[a:b]  # a word piece ("bark", "s") or "" for special and padding tokens
            if i == 0 and b > a and b <= len("a dog barks"):
                torch.testing.assert_close(states[i, k], dog)
            elif i == 0 and a >= text.index("rain"):
                torch.testing.assert_close(states[i, k], rain)
            elif i == 2 and b > a:
                torch.testing.assert_close(states[i, k], bell)
            else:  # [CLS], [SEP], "while", padding, the empty prompt
                assert not states[i, k].any(), (text, k, word)


def test_a_widened_pipeline_starts_where_the_narrow_one_was(text_encoder):
    """Clause channels on a UNet widened with zero weights change nothing until trained; a UNet of the wrong
    width for the config is refused."""
    from services.modeling import CheckpointError
    from tests.test_generator import tiny_pipeline
    from training.train_generator import with_clause_channels

    narrow = tiny_pipeline(text_encoder)
    wide = with_clause_channels(narrow)
    assert with_clause_channels(wide) is wide
    prompt = "a hound yaps, and at the same time a kitty mews"
    a = narrow.generate(prompt, seed=3, steps=3).waveforms
    b = wide.generate(prompt, seed=3, steps=3).waveforms
    np.testing.assert_array_equal(a, b)
    h, _ = wide.encode_text([prompt])
    assert h.shape[-1] == wide.text_width == 2 * text_encoder.hidden_size and h[0, :, text_encoder.hidden_size :].any()
    with pytest.raises(CheckpointError, match="384 x 2 for clause channels"):
        tiny_pipeline(text_encoder, clause_channels=True)
