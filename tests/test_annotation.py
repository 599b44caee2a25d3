import json

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from training.annotation import (
    AnnotationFileError,
    AnnotationRecord,
    Provenance,
    export_baton_records,
    export_grouped_ratings,
    import_baton_records,
    import_grouped_ratings,
    read_annotations,
    write_annotations,
)
from tta.cli import main

RECORDS = [
    {"prompt": "a dog barks, then a bell rings", "audio": "clips/0001.wav", "label": 1},
    {"prompt": "a dog barks, then a bell rings", "audio": "clips/0002.wav", "label": 0},
    {"prompt": "rain falls while thunder rumbles", "audio": "clips/0003.wav", "label": 1},
]
GROUPED = {
    "grouped_ratings": {
        "a cat meows, then a phone rings": {"a_0.wav": 1, "a_1.wav": 0, "a_2.wav": 1},
        "first a whistle, then footsteps, and then a car horn": {"b_0.wav": 0, "b_1.wav": 0},
    }
}


def _record(**over):
    base = {"prompt": "p", "audio": "a.wav", "task": "integrity", "label": 1, "annotator": "human:x", "provenance": {"source": "human"}}
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over, field",
    [
        ({"label": 2}, "label"),
        ({"label": True}, "label"),
        ({"label": 0.5}, "label"),
        ({"label": "1"}, "label"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"audio": ""}, "audio"),
        ({"task": "fidelity"}, "task"),
        ({"annotator": ""}, "annotator"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_record_validation_names_the_field(over, field):
    with pytest.raises(ValidationError) as err:
        AnnotationRecord.model_validate(_record(**over))
    assert field in str(err.value)


def test_jsonl_round_trip_and_row_numbers(tmp_path):
    recs = [AnnotationRecord.model_validate(_record(label=i % 2, audio=f"{i}.wav")) for i in range(5)]
    path = tmp_path / "ann.jsonl"
    assert write_annotations(path, recs) == 5
    assert read_annotations(path) == recs
    lines = path.read_text().splitlines()
    lines[3] = json.dumps(_record(label=7))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationFileError) as err:
        read_annotations(path)
    assert "row 4" in str(err.value) and "label must be 0 or 1" in str(err.value)
    assert len(err.value.errors) == 1


def test_baton_records_round_trip(tmp_path):
    src = tmp_path / "baton.json"
    src.write_text(json.dumps(RECORDS))
    recs = import_baton_records(src, "integrity")
    assert [r.label for r in recs] == [1, 0, 1]
    assert recs[2].provenance == Provenance(source="baton-records", source_file=str(src), source_row=3)
    assert export_baton_records(recs) == RECORDS
    store = tmp_path / "ann.jsonl"
    write_annotations(store, recs)
    assert export_baton_records(read_annotations(store)) == RECORDS


def test_baton_records_accept_audio_path_key(tmp_path):
    src = tmp_path / "baton.json"
    src.write_text(json.dumps([{"prompt": "x", "audio_path": "y.wav", "label": 0}]))
    assert import_baton_records(src, "temporal")[0].audio == "y.wav"


def test_grouped_ratings_round_trip(tmp_path):
    src = tmp_path / "grouped.json"
    src.write_text(json.dumps(GROUPED))
    recs = import_grouped_ratings(src, "temporal")
    assert len(recs) == 5
    assert [r.provenance.source_row for r in recs] == [1, 2, 3, 4, 5]
    assert export_grouped_ratings(recs) == GROUPED
    inner = tmp_path / "inner.json"  # the bare {prompt: {file: label}} mapping is accepted too
    inner.write_text(json.dumps(GROUPED["grouped_ratings"]))
    assert import_grouped_ratings(inner, "temporal") == [r.model_copy(update={"provenance": r.provenance.model_copy(update={"source_file": str(inner)})}) for r in recs]


def test_bad_baton_rows_fail_with_row_and_reason(tmp_path):
    rows = RECORDS + [
        {"prompt": "x", "audio": "y.wav", "label": 3},
        {"prompt": "x", "label": 1},
        "not an object",
        {"prompt": "x", "audio": "y.wav", "label": 1, "score": 0.3},
    ]
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(rows))
    with pytest.raises(AnnotationFileError) as err:
        import_baton_records(src, "integrity")
    msg = str(err.value)
    assert "4 invalid row(s)" in msg
    assert "row 4: label" in msg and "label must be 0 or 1, got 3" in msg
    assert "row 5: missing field(s) ['audio']" in msg
    assert "row 6: expected an object" in msg
    assert "row 7: unknown field(s) ['score']" in msg
    assert "row 1" not in msg


def test_bad_grouped_rows_name_prompt_and_file(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps({"grouped_ratings": {"p1": {"a.wav": 1, "b.wav": "yes"}, "p2": [1, 0]}}))
    with pytest.raises(AnnotationFileError) as err:
        import_grouped_ratings(src, "integrity")
    msg = str(err.value)
    assert "row 2 (prompt 'p1', file 'b.wav')" in msg
    assert "row 3 (prompt 'p2')" in msg
    src.write_text("{oops")
    with pytest.raises(AnnotationFileError, match="not JSON"):
        import_grouped_ratings(src, "integrity")


def test_conflicting_labels_cannot_be_grouped():
    recs = [AnnotationRecord.model_validate(_record(label=lab)) for lab in (0, 1)]
    with pytest.raises(ValueError, match="conflicting"):
        export_grouped_ratings(recs)


def test_cli_import_export_round_trip(tmp_path):
    src = tmp_path / "grouped.json"
    src.write_text(json.dumps(GROUPED))
    store, back = tmp_path / "ann.jsonl", tmp_path / "back.json"
    runner = CliRunner()
    res = runner.invoke(main, ["annotate", "import", str(src), "--format", "grouped", "--task", "temporal", "--out", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["annotate", "export", str(store), "--format", "grouped", "--out", str(back)])
    assert res.exit_code == 0, res.output
    assert json.loads(back.read_text()) == GROUPED


def test_cli_import_refuses_bad_file_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"prompt": "x", "audio": "y.wav", "label": -1}]))
    out = tmp_path / "ann.jsonl"
    res = CliRunner().invoke(main, ["annotate", "import", str(src), "--format", "records", "--task", "integrity", "--out", str(out)])
    assert res.exit_code == 1
    assert "row 1" in res.output
    assert not out.exists()
