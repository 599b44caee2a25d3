"""The in-process chain without Ray: grouping requests into generator batches, per-prompt ranking, checks."""

from __future__ import annotations

import numpy as np
import pytest

from services.pipeline import GenerationCall, GenerationSettings, TextToAudio, check_call, generate_grouped, rank_candidates
from tests.test_generator import rel_diff, text_encoder, tiny_pipeline  # noqa: F401 (text_encoder is a fixture)


@pytest.fixture(scope="module")
def pipe(text_encoder):  # noqa: F811
    return tiny_pipeline(text_encoder)


class LoudnessReranker:
    """A real (if simple) reward: RMS of the clip. Enough to check ordering is per prompt."""

    version = "loudness@test"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.timelines: list[list[str] | None] = []

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        self.calls.append((prompt, len(waveforms)))
        self.timelines.append(timeline)
        return np.sqrt((waveforms**2).mean(axis=1))


def test_grouped_generation_equals_one_call_per_request(pipe):
    fast = GenerationSettings(steps=2)
    calls = [GenerationCall("a dog barks", 2, 10, fast), GenerationCall("rain falls", 1, 20, GenerationSettings(steps=3)), GenerationCall("a bell rings", 2, 30, fast)]
    batched = generate_grouped(pipe, calls)
    assert [b.batch_waveforms for b in batched] == [4, 1, 4], "equal settings share one generator call"
    for call, got in zip(calls, batched):
        alone = pipe.generate([call.prompt], num_candidates=call.num_candidates, seed=call.seed, steps=call.settings.steps).waveforms[0]
        assert got.seeds == [call.seed + j for j in range(call.num_candidates)]
        assert max(rel_diff(got.waveforms[j], alone[j]) for j in range(call.num_candidates)) < 1e-4


def test_a_request_without_seed_gets_a_reported_random_one(pipe):
    (a,) = generate_grouped(pipe, [GenerationCall("a dog barks", 2, None, GenerationSettings(steps=2))])
    assert a.seeds[1] == a.seeds[0] + 1
    again = pipe.generate(["a dog barks"], num_candidates=2, seed=a.seeds[0], steps=2).waveforms[0]
    assert rel_diff(a.waveforms[0], again[0]) < 1e-4, "the reported seed reproduces the audio"


def test_a_passed_deadline_stops_its_group_and_spares_the_others(pipe):
    import time

    from services.generator import GenerationTimeout

    expired = GenerationCall("a dog barks", 2, 1, GenerationSettings(steps=50), deadline=time.time() - 1)
    alive = GenerationCall("rain falls", 1, 2, GenerationSettings(steps=2), deadline=time.time() + 600)
    late, ok = generate_grouped(pipe, [expired, alive], return_exceptions=True)
    assert isinstance(late, GenerationTimeout) and ok.waveforms.shape[0] == 1
    with pytest.raises(GenerationTimeout, match="deadline passed"):
        generate_grouped(pipe, [expired, alive])
    # a group runs until its latest member's deadline: an expired member does not stop a live one
    a, b = generate_grouped(pipe, [GenerationCall("a dog barks", 1, 1, GenerationSettings(steps=2), deadline=time.time() - 1), alive], return_exceptions=True)
    assert not isinstance(a, Exception) and a.batch_waveforms == 2


def test_ranking_is_per_prompt_and_best_first(pipe):
    reranker = LoudnessReranker()
    service = TextToAudio(pipe, reranker=reranker)
    results = service(["a dog barks", "rain falls"], num_candidates=3, seed=1, settings=GenerationSettings(steps=2))
    assert reranker.calls == [("a dog barks", 3), ("rain falls", 3)], "scored one prompt's candidates at a time"
    for r in results:
        rewards = [c.reward for c in r.candidates]
        assert rewards == sorted(rewards, reverse=True) and r.best.reward == max(rewards)
        assert sorted(c.index for c in r.candidates) == [0, 1, 2]
        loudest = max(r.candidates, key=lambda c: np.sqrt((c.waveform**2).mean()))
        assert r.best is loudest


def test_the_reranker_hears_which_clauses_the_generator_placed(pipe):
    """A reranker that judges clauses by stretch needs the timeline the generator used for that prompt."""
    reranker = LoudnessReranker()
    results = TextToAudio(pipe, reranker=reranker)(["a dog barks, then a bell rings", "rain falls"], num_candidates=2, seed=1, settings=GenerationSettings(steps=2, timeline=True))
    assert reranker.timelines == [["a dog barks", "a bell rings"], None]
    assert results[0].settings["timeline"] is True


def test_without_reranker_generation_order_and_no_reward(pipe):
    (r,) = TextToAudio(pipe)(["a dog barks"], num_candidates=3, seed=4, settings=GenerationSettings(steps=2))
    assert [c.index for c in r.candidates] == [0, 1, 2] and [c.seed for c in r.candidates] == [4, 5, 6]
    assert all(c.reward is None for c in r.candidates) and r.rewritten_prompt is None


def test_ties_keep_generation_order():
    from services.pipeline import GeneratedAudio

    class Flat:
        version = "flat"

        def score(self, prompt, waveforms, sample_rate, timeline=None):
            return np.full(len(waveforms), 0.5)

    audio = GeneratedAudio(np.zeros((3, 8), np.float32), [7, 8, 9], 16000, {}, 0.0, 3)
    assert [c.index for c in rank_candidates("x", audio, Flat())] == [0, 1, 2]


@pytest.mark.parametrize(
    "call, message",
    [
        (GenerationCall("a dog barks", 1, 0, GenerationSettings(duration_s=5.0)), "duration_s must be in"),
        (GenerationCall("   ", 1, 0), "blank"),
        (GenerationCall("a dog barks", 0, 0), "num_candidates"),
    ],
)
def test_check_call_refuses_what_the_generator_cannot_do(pipe, call, message):
    with pytest.raises(ValueError, match=message):
        check_call(pipe, call)
