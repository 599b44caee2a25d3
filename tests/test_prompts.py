import json

import pytest

from training.world.prompts import PromptFileError, load_audio_prompt_rows, load_prompt_file


def _write(tmp_path, rows):
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


def test_valid_prompt_file(tmp_path):
    p = _write(tmp_path, [
        {"prompt": "a dog barks, then a bell rings", "events": ["dog_bark", "bell"], "relation": "sequence"},
        {"prompt": "rain", "events": ["rain"], "relation": None},
        {"prompt": "a cat meows while it rains", "events": ["cat_meow", "rain"], "relation": "overlap"},
    ])
    specs = load_prompt_file(p)
    assert [s.relation for s in specs] == ["sequence", None, "overlap"]
    assert specs[0].events == ["dog_bark", "bell"]


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"prompt": "x", "events": ["dragon_roar"], "relation": None}, "dragon_roar"),
        ({"prompt": "x", "events": ["dog_bark", "bell"], "relation": "meanwhile"}, "relation"),
        ({"prompt": "", "events": ["dog_bark"]}, "prompt"),
        ({"prompt": "x", "events": []}, "events"),
        ({"prompt": "x", "events": ["bell"], "relation": "sequence"}, "at least 2"),
        ({"prompt": "x", "events": ["bell", "rain", "siren"], "relation": "overlap"}, "exactly 2"),
        ({"prompt": "x", "events": ["bell"], "extra": 1}, "extra"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_line_is_named(tmp_path, row, needle):
    good = {"prompt": "a bell rings", "events": ["bell"], "relation": None}
    p = _write(tmp_path, [good, good, row])
    with pytest.raises(PromptFileError) as err:
        load_prompt_file(p)
    assert f"{p}:3:" in str(err.value)
    assert needle in str(err.value)


def test_every_bad_line_is_reported(tmp_path):
    p = _write(tmp_path, [{"prompt": "x", "events": ["nope"]}, {"prompt": "ok", "events": ["bell"]}, {"prompt": "y", "events": ["meh"]}])
    with pytest.raises(PromptFileError) as err:
        load_prompt_file(p)
    assert ":1:" in str(err.value) and ":3:" in str(err.value) and ":2:" not in str(err.value)


def test_audio_rows_accept_world_rows(tmp_path):
    world_row = {"caption": "a dog barks, then a bell rings", "relation": "sequence", "events": [{"event": "dog_bark", "onset": 0.1, "offset": 0.5}, {"event": "bell", "onset": 1.0, "offset": 2.0}], "audio": "a.wav"}
    p = _write(tmp_path, [world_row, {"prompt": "rain", "events": ["rain"], "audio": "b.wav"}])
    rows = load_audio_prompt_rows(p)
    assert rows[0][0].events == ["dog_bark", "bell"] and rows[0][1] == "a.wav"
    assert rows[1][0].relation is None
    bad = _write(tmp_path, [{"prompt": "rain", "events": ["rain"]}])
    with pytest.raises(PromptFileError, match=":1: missing 'audio'"):
        load_audio_prompt_rows(bad)
