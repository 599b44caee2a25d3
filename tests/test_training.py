"""Training machinery on tiny settings: the loop runs, checkpoints, and resumes where it stopped."""

import json

from services.manifest import verify_manifest
from training.train_oracle import train_oracle


def test_oracle_training_resumes(tmp_path):
    kwargs = dict(batch_size=8, n_clips=40, n_negatives=8, work_dir=tmp_path / "run", cache_dir=tmp_path / "cache", eval_every=1000, checkpoint_every=1, eval_n=6, eval_negatives=6, val_n=8, command="test")
    train_oracle(tmp_path / "out", steps=2, **kwargs)
    assert (tmp_path / "run" / "train_state.pt").is_file()
    assert list((tmp_path / "cache").glob("*.npz")), "rendered data is cached for the next run"
    train_oracle(tmp_path / "out", steps=4, **kwargs)  # picks up at step 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    manifest = verify_manifest(tmp_path / "out")
    assert manifest["command"] == "test" and "presence_f1" in manifest["metrics"]
