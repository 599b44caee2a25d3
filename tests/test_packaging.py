"""A non-editable install must carry the shipped checkpoints (package data) and the `tta` script."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_checkpoints_and_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("aligned_tta-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("MANIFEST.json", "config.json", "model.safetensors"):
        assert f"services/checkpoints/oracle/{f}" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tta = tta.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
