"""The shipped oracle: loading, accuracy on a small held-out sample, the simulated annotator."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from services.checkpoints import shipped
from services.manifest import ManifestError, verify_manifest
from services.modeling import CheckpointError
from training.annotation import SimulatedAnnotator, oracle_label
from training.eval_oracle import evaluate_oracle, spec_from_prompt
from training.world.clips import make_clip
from training.world.events import EVENT_IDS
from training.world.negatives import NEGATIVE_KINDS, make_negative
from training.world.oracle import OracleConfig, SoundEventDetector, frame_targets, load_oracle
from training.world.prompts import PromptSpec
from tta.cli import main


@pytest.fixture(scope="module")
def oracle() -> SoundEventDetector:
    return load_oracle()


def test_shipped_manifest_is_complete():
    manifest = verify_manifest(shipped("oracle"))
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert manifest["command"].startswith("tta train oracle")
    assert isinstance(manifest["seed"], int)
    m = manifest["metrics"]
    assert m["presence_f1"] >= 0.97 and m["order_accuracy"] >= 0.97 and m["max_class_fpr"] <= 0.03


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "oracle"
    shutil.copytree(shipped("oracle"), bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="model.safetensors has sha256"):
        load_oracle(str(bad))
    (bad / "MANIFEST.json").unlink()
    (bad / "config.json").write_text('{"channels": [1, 2]}')
    with pytest.raises(CheckpointError, match="channels"):
        load_oracle(str(bad))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_oracle(str(tmp_path / "nowhere"))


def test_save_load_round_trip(tmp_path):
    model = SoundEventDetector(OracleConfig(channels=[4, 8, 8], rnn_hidden=8)).eval()
    model.save_pretrained(tmp_path / "m")
    again = SoundEventDetector.from_pretrained(tmp_path / "m")
    x = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 0.1
    assert np.allclose(model.frame_probs(x), again.frame_probs(x), atol=1e-6)


def test_frame_targets_cover_events():
    from training.world.clips import EventTruth

    y = frame_targets([EventTruth(event="bell", onset=0.1, offset=0.3)], list(EVENT_IDS), 64, 0.064)
    col = y[:, EVENT_IDS.index("bell")]
    assert col[1:5].all() and not col[6:].any() and y.sum() == col.sum()


def test_oracle_hears_held_out_clips(oracle):
    report = evaluate_oracle(oracle, n=80, seed=11, n_negatives=36, degraded=False, progress=False)
    assert report.metrics["presence_f1"] >= 0.93, report.metrics
    assert report.metrics["order_accuracy"] >= 0.9, report.metrics
    assert report.metrics["max_class_fpr"] <= 0.1, report.metrics
    # every clip is judged in exactly one composition group, and the evaluator accepts most ground truth
    groups = report.per_composition
    assert sum(v["clips"] for v in groups.values()) == 80 and set(groups) <= {"single", *(f"{r}, {p}" for r in ("sequence", "overlap") for p in ("held-out pair", "training pairs"))}
    assert sum(v["clips"] * v["accepted"] for v in groups.values()) >= 0.85 * 80, groups


def test_composition_names_held_out_pairs():
    from training.eval_oracle import composition
    from training.world.clips import heldout_pairs

    pair = sorted(next(iter(heldout_pairs())))
    assert composition(pair, "overlap") == "overlap, held-out pair"
    assert composition([*pair, "guitar" if "guitar" not in pair else "bell"], "sequence") == "sequence, held-out pair"
    training_pair = next(sorted(p) for p in (frozenset({a, b}) for a in EVENT_IDS for b in EVENT_IDS if a != b) if p not in heldout_pairs())
    assert composition(training_pair, "sequence") == "sequence, training pairs" and composition(["bell"], "single") == "single"


def test_oracle_tells_every_class_apart(oracle):
    # one clean single-event clip per class per seed: the oracle must name exactly that class
    audios, wanted = [], []
    for seed in range(3):
        for i, e in enumerate(EVENT_IDS):
            spec = PromptSpec(prompt=e, events=[e])
            clip = make_clip(20 + seed, "heldout", i, spec=spec_from_prompt(spec, np.random.default_rng(i)))
            audios.append(clip.audio)
            wanted.append(e)
    dets = oracle.detect(np.stack(audios))
    correct = sum(d.present() == {w} for d, w in zip(dets, wanted))
    assert correct >= 0.95 * len(wanted), [(w, sorted(d.present())) for d, w in zip(dets, wanted) if d.present() != {w}]


def test_simulated_annotator_follows_baton_rules(oracle):
    clips = [make_clip(2, "heldout", i, task="temporal") for i in range(24)]
    audio = np.stack([c.audio for c in clips])
    dets = oracle.detect(audio)
    truthful = [PromptSpec(prompt=c.truth.caption, events=[e.event for e in c.truth.events], relation="sequence") for c in clips]
    reversed_ = [s.model_copy(update={"events": s.events[::-1]}) for s in truthful]
    wrong = [s.model_copy(update={"events": [next(e for e in EVENT_IDS if e not in s.events)] + s.events[1:]}) for s in truthful]
    assert np.mean([oracle_label(d, s, "temporal") for d, s in zip(dets, truthful)]) >= 0.9
    assert np.mean([oracle_label(d, s, "integrity") for d, s in zip(dets, reversed_)]) >= 0.9  # integrity ignores order
    assert np.mean([oracle_label(d, s, "temporal") for d, s in zip(dets, reversed_)]) <= 0.05
    assert np.mean([oracle_label(d, s, "integrity") for d, s in zip(dets, wrong)]) <= 0.05


def test_simulated_annotator_flip_rate(oracle):
    clips = [make_clip(3, "heldout", i, task="integrity") for i in range(200)]
    specs = [PromptSpec(prompt=c.truth.caption, events=[e.event for e in c.truth.events]) for c in clips]
    audio = np.stack([c.audio for c in clips])
    paths = [f"{i}.wav" for i in range(len(clips))]
    clean = SimulatedAnnotator(oracle, flip_rate=0.0).annotate(audio, specs, paths, "integrity")
    noisy = SimulatedAnnotator(oracle, flip_rate=0.1, seed=5).annotate(audio, specs, paths, "integrity")
    again = SimulatedAnnotator(oracle, flip_rate=0.1, seed=5).annotate(audio, specs, paths, "integrity")
    assert [r.label for r in noisy] == [r.label for r in again], "flips are deterministic by seed"
    flipped = [a.label != b.label for a, b in zip(clean, noisy)]
    assert 0.05 <= np.mean(flipped) <= 0.16
    assert flipped == [r.provenance.flipped for r in noisy]
    assert all(r.provenance.oracle_label == c.label for r, c in zip(noisy, clean))
    inverted = SimulatedAnnotator(oracle, flip_rate=1.0).annotate(audio[:10], specs[:10], paths[:10], "integrity")
    assert [r.label for r in inverted] == [1 - r.label for r in clean[:10]]
    with pytest.raises(ValueError, match="flip_rate"):
        SimulatedAnnotator(oracle, flip_rate=1.5)


def test_negatives_cover_every_kind():
    kinds = {make_negative(0, i)[0] for i in range(len(NEGATIVE_KINDS))}
    assert kinds == set(NEGATIVE_KINDS)


def test_eval_cli_json_last_line(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "a dog barks, then a bell rings", "events": ["dog_bark", "bell"], "relation": "sequence"},
                {"prompt": "rain with thunder", "events": ["thunder", "rain"], "relation": "overlap"},
                {"prompt": "a siren", "events": ["siren"], "relation": None},
            ]
        )
    )
    res = CliRunner().invoke(main, ["eval", "oracle", "--prompts", str(prompts), "--negatives", "6", "--json", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["clips"] == 3 and metrics["order_clips"] == 1
    for key in metrics:  # the table and the JSON use the same keys
        assert f"| {key} |" in res.output
    assert (tmp_path / "rep" / "per_class.png").is_file() and (tmp_path / "rep" / "report.md").is_file()


def test_eval_cli_names_bad_prompt_line(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "x", "events": ["bell"]}\n{"prompt": "y", "events": ["unicorn"]}\n')
    res = CliRunner().invoke(main, ["eval", "oracle", "--prompts", str(prompts)])
    assert res.exit_code == 1
    assert "p.jsonl:2:" in res.output and "unicorn" in res.output


def test_annotate_simulate_cli_on_world_sample(tmp_path):
    runner = CliRunner()
    world = tmp_path / "world"
    assert runner.invoke(main, ["world", "sample", "--n", "6", "--out", str(world), "--task", "integrity", "--split", "heldout"]).exit_code == 0
    out = tmp_path / "ann.jsonl"
    res = runner.invoke(main, ["annotate", "simulate", str(world / "clips.jsonl"), "--task", "integrity", "--flip-rate", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from training.annotation import read_annotations

    records = read_annotations(out)
    assert len(records) == 6 and all(r.provenance.source == "simulated" for r in records)
    assert sum(r.label for r in records) >= 5  # ground-truth clips against their own captions
    res = runner.invoke(main, ["annotate", "simulate", str(world / "clips.jsonl"), "--task", "integrity", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_stated_order_is_scored_only_when_every_event_is_heard():
    from training.eval_generator import stated_order_heard
    from training.world.clips import EventTruth
    from training.world.oracle import Detection

    spec = PromptSpec(prompt="a dog barks, then a bell rings, then rain falls", events=["dog_bark", "bell", "rain"], relation="sequence")

    def heard(*events: tuple[str, float]) -> Detection:
        return Detection(presence={e: 0.9 for e, _ in events}, events=[EventTruth(event=e, onset=t, offset=t + 0.5) for e, t in sorted(events, key=lambda x: x[1])])

    assert stated_order_heard(heard(("dog_bark", 0.1), ("bell", 1.2), ("rain", 2.5)), spec) == 1.0
    assert stated_order_heard(heard(("bell", 0.1), ("dog_bark", 1.2), ("rain", 2.5)), spec) == 0.0
    assert stated_order_heard(heard(("dog_bark", 0.1), ("rain", 2.5)), spec) is None  # the bell is missing: order says nothing
    # an extra event does not change the order verdict (temporal.accuracy counts it against the clip)
    assert stated_order_heard(heard(("dog_bark", 0.1), ("siren", 0.2), ("bell", 1.2), ("rain", 2.5)), spec) == 1.0


def test_candidate_sets_are_judged_again_from_their_audio(oracle, tmp_path):
    from services.audio import write_wav
    from training.annotation import AnnotationRecord, Provenance, write_annotations
    from training.eval_rerank import candidate_records

    # ground-truth sequence clips of training pairs (the oracle hears these right), stored labels all 0; the
    # second record of each prompt claims the other clip's events in reverse, which a judge must refuse
    clips = [c for c in (make_clip(3, "train", i) for i in range(40)) if c.truth.relation == "sequence" and len(c.truth.events) == 2 and not c.truth.heldout_combination][:3]
    assert len(clips) == 3
    (tmp_path / "audio").mkdir()
    records = []
    for i, clip in enumerate(clips):
        write_wav(tmp_path / "audio" / f"{i}.wav", clip.audio)
        events = [e.event for e in sorted(clip.truth.events, key=lambda e: e.onset)]
        for claimed in (events, events[::-1]):
            records.append(AnnotationRecord(prompt=clip.truth.caption, audio=f"audio/{i}.wav", task="temporal", label=0, annotator="simulated", provenance=Provenance(source="simulated", oracle_label=0, events=claimed)))
    write_annotations(tmp_path / "records.jsonl", records)
    (tmp_path / "dataset.json").write_text(json.dumps({"task": "temporal", "seed": 3, "clips_per_prompt": 2}))
    assert candidate_records(tmp_path)[1].sum() == 0  # the stored labels
    _, labels = candidate_records(tmp_path, oracle)
    assert labels.tolist() == [[1, 0]] * len(clips)
    records[0] = records[0].model_copy(update={"provenance": Provenance(source="human")})
    write_annotations(tmp_path / "records.jsonl", records)
    with pytest.raises(ValueError, match="name no prompted events"):
        candidate_records(tmp_path, oracle)


def test_a_judge_deaf_to_one_composition_fails_the_gates():
    from training.eval_oracle import OracleReport, report_markdown

    good = {"presence_f1": 0.99, "order_accuracy": 1.0, "max_class_fpr": 0.0}
    assert OracleReport(dict(good)).passed  # no composition large enough to judge: that gate does not apply
    assert OracleReport(good | {"min_composition_accepted": 0.9}).passed
    deaf = OracleReport(good | {"min_composition_accepted": 0.63})
    assert not deaf.passed and "| min_composition_accepted | 0.6300 | >= 0.85 |" in report_markdown(deaf)
