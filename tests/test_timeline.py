"""Timelines: the clause parser on every world phrasing, token visibility over time, the masked
cross-attention, and the pipeline with timelines on and off (tiny random UNet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.text_encoder import MINILM, TextEncoder
from services.timeline import MAX_SEGMENTS, TimelineAttnProcessor, TimelineMask, parse_timeline, token_time_mask
from tests.test_generator import rel_diff, tiny_pipeline
from training.world import captions as cap

CLAUSES = ["a dog barks", "a bell rings", "rain falls"]
NOUNS = ["a barking dog", "a ringing bell", "falling rain"]


def texts(prompt: str) -> list[str] | None:
    segments = parse_timeline(prompt)
    if segments is not None:  # every segment's span points at its own text in the prompt
        assert all(prompt[s.start : s.end] == s.text for s in segments)
    return None if segments is None else [s.text for s in segments]


@pytest.mark.parametrize("template", cap.SEQUENCE2_TEMPLATES + cap.SEQUENCE3_TEMPLATES + cap.HELDOUT_SEQUENCE2_TEMPLATES + cap.HELDOUT_SEQUENCE3_TEMPLATES)
def test_every_sequence_phrasing_splits_into_its_clauses_in_audio_order(template):
    k = 3 if "{c}" in template or "{nc}" in template else 2
    prompt = cap.render_caption(template, CLAUSES[:k], NOUNS[:k])
    # the world's templates name the events' audio order; "{b} after {a}" names the later one first
    expected = []
    for i, name in enumerate("abc"[:k]):
        expected.append(CLAUSES[i] if "{" + name + "}" in template else NOUNS[i])
    assert texts(prompt) == expected


@pytest.mark.parametrize("template", cap.OVERLAP_TEMPLATES + cap.SINGLE_TEMPLATES + cap.HELDOUT_OVERLAP_TEMPLATES + cap.HELDOUT_SINGLE_TEMPLATES)
def test_prompts_without_a_sequence_get_no_timeline(template):
    assert texts(cap.render_caption(template, CLAUSES[:2], NOUNS[:2])) is None


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("after a dog barks, a bell rings", ["a dog barks", "a bell rings"]),
        ("A dog barks. Then a bell rings.", ["A dog barks", "a bell rings"]),
        ("rain falls after a dog barks, then a cat meows", ["a dog barks", "rain falls", "a cat meows"]),
        ("next to the river a frog croaks", None),  # a marker, but only one clause
        ("a dog barks, a bell rings", None),  # a list is not a sequence without a marker
        ("then", None),
        (", then ,", None),
        (", then ".join(["a dog barks"] * (MAX_SEGMENTS + 1)), None),
    ],
)
def test_parser_edge_cases(prompt, expected):
    assert texts(prompt) == expected


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder.from_pretrained(MINILM, 32)


def test_clause_tokens_are_visible_only_in_their_stretch(text_encoder):
    prompt = "a dog barks, then a bell rings"
    spans = text_encoder.token_spans([prompt, ""])
    tokens = text_encoder.tokenizer.convert_ids_to_tokens(text_encoder.tokenizer(prompt)["input_ids"])
    visible = token_time_mask(spans[0], parse_timeline(prompt), frames=8)
    rows = dict(zip(tokens, visible[: len(tokens)].tolist()))
    assert rows["dog"] == rows["bark"] == rows["##s"] == [True] * 4 + [False] * 4
    assert rows["bell"] == rows["rings"] == [False] * 4 + [True] * 4
    assert rows["[CLS]"] == rows["[SEP]"] == rows["then"] == rows[","] == [True] * 8
    assert visible[:, :].shape == (spans.shape[1], 8)
    assert token_time_mask(spans[1], None, 8).all()  # no timeline: everything everywhere


def test_mask_follows_the_unet_down_the_resolutions():
    visible = torch.zeros(1, 3, 8, dtype=torch.bool)
    visible[0, 0] = True  # token 0 everywhere
    visible[0, 1, :4] = True  # token 1 in the first half, token 2 in the second
    visible[0, 2, 4:] = True
    tl = TimelineMask(visible, bins=4)
    for queries, frames, bins in ((32, 8, 4), (8, 4, 2), (2, 2, 1)):
        bias = tl.bias(queries, torch.float32, torch.device("cpu"))
        assert bias.shape == (1, queries, 3)
        per_frame = bias[0].reshape(frames, bins, 3)
        assert (per_frame[:, :, 0] == 0).all()
        assert (per_frame[: frames // 2, :, 1] == 0).all() and (per_frame[frames // 2 :, :, 1] < -1000).all()
        assert (per_frame[: frames // 2, :, 2] < -1000).all() and (per_frame[frames // 2 :, :, 2] == 0).all()
    with pytest.raises(ValueError, match="cannot place 7 attention queries"):
        tl.bias(7, torch.float32, torch.device("cpu"))


def test_masked_cross_attention_ignores_other_clauses_and_is_plain_attention_without_a_timeline():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8)
    hidden = torch.randn(1, 8 * 2, 16)  # 8 frames x 2 bins, time-major like the UNet's
    states = torch.randn(1, 4, 12)
    visible = torch.ones(1, 4, 8, dtype=torch.bool)
    visible[0, 2, 4:] = False  # token 2 belongs to the first half's clause
    visible[0, 3, :4] = False  # token 3 to the second half's
    processor = TimelineAttnProcessor()
    plain = AttnProcessor2_0()(attn, hidden, states)
    torch.testing.assert_close(processor(attn, hidden, states), plain, rtol=0, atol=0)
    tl = TimelineMask(visible, bins=2)
    out = processor(attn, hidden, states, timeline=tl)
    changed = states.clone()
    changed[0, 3] = torch.randn(12)  # another second clause
    out2 = processor(attn, hidden, changed, timeline=tl)
    first_half = slice(0, 4 * 2)
    torch.testing.assert_close(out2[:, first_half], out[:, first_half])
    assert (out2[:, 4 * 2 :] - out[:, 4 * 2 :]).abs().max() > 1e-3
    self_attn = Attention(query_dim=16, heads=2, dim_head=8)
    torch.testing.assert_close(processor(self_attn, hidden, None, timeline=tl), AttnProcessor2_0()(self_attn, hidden), rtol=0, atol=0)  # self-attention: no mask


def test_pipeline_timeline_changes_sequences_only(text_encoder):
    pipe = tiny_pipeline(text_encoder, default_timeline=True)
    prompts = ["a dog barks, then a bell rings", "a cat meows while rain falls"]
    on = pipe.generate(prompts, num_candidates=2, seed=3)
    off = pipe.generate(prompts, num_candidates=2, seed=3, timeline=False)
    assert on.settings["timeline"] is True and off.settings["timeline"] is False
    assert on.timelines == [["a dog barks", "a bell rings"], None] and off.timelines == [None, None]
    np.testing.assert_array_equal(on.waveforms[1], off.waveforms[1])  # no sequence stated: same computation
    assert rel_diff(on.waveforms[0], off.waveforms[0]) > 1e-2
    alone = pipe.generate(prompts[:1], num_candidates=1, seed=4)  # candidate 1 of prompt 1 had seed 4
    assert rel_diff(alone.waveforms[0, 0], on.waveforms[0, 1]) < 1e-4
    unguided = pipe.generate(prompts[:1], seed=3, guidance_scale=1.0)  # the cond rows only
    assert unguided.timelines == [["a dog barks", "a bell rings"]] and unguided.waveforms.shape[:2] == (1, 1)


def test_cli_generate_and_eval_take_the_timeline_switch(text_encoder, tmp_path):
    import json

    from click.testing import CliRunner

    from tta.cli import main

    tiny_pipeline(text_encoder).save_pretrained(tmp_path / "g")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", "a dog barks, then a bell rings", "-o", str(out), "--checkpoint", str(tmp_path / "g"), "--seed", "4", "--steps", "2", "--timeline"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "generation.json").read_text())
    assert meta["settings"]["timeline"] is True and meta["files"][0]["timeline"] == ["a dog barks", "a bell rings"]
    args = ["eval", "generator", "--checkpoint", str(tmp_path / "g"), "--n", "2", "--steps", "2", "--roundtrip-n", "0", "--timeline", "on,off", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output.strip().splitlines()[-1])
    assert set(reports) == {"hifigan:ddpm@2+timeline", "hifigan:ddpm@2"}
    # single-event and overlap prompts state no sequence: the timeline leaves them exactly as they were
    on, off = reports["hifigan:ddpm@2+timeline"], reports["hifigan:ddpm@2"]
    assert on["single.presence"] == off["single.presence"]
    assert "temporal.accuracy.novel_template" in on or "temporal.accuracy.seen_template" in on
    bad = CliRunner().invoke(main, ["eval", "generator", "--checkpoint", str(tmp_path / "g"), "--timeline", "maybe"])
    assert bad.exit_code != 0 and "expected on, off or on,off" in bad.output
