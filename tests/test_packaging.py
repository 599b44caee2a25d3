"""A non-editable install must carry the shipped checkpoints (package data) and the `tta` script."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_checkpoints_and_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("aligned_tta-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every file every shipped MANIFEST lists (weights, configs, the reward head's ONNX file) is in the wheel
    manifests = sorted((ROOT / "services" / "checkpoints").glob("*/MANIFEST.json"))
    assert {m.parent.name for m in manifests} >= {"oracle", "generator", "clap", "reward"}
    for manifest in manifests:
        component = manifest.parent.name
        assert f"services/checkpoints/{component}/MANIFEST.json" in names
        missing = [f for f in json.loads(manifest.read_text())["files"] if f"services/checkpoints/{component}/{f}" not in names]
        assert not missing, f"{component}: not in the wheel: {missing}"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tta = tta.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
