"""The CNN examples run in --quick mode and save non-empty PNGs; the demo calls the CNN part."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, out: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def assert_pngs(out: Path, names: list[str]) -> None:
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name


def test_cnn_digits_example(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    stdout = run_example("cnn_digits.py", tmp_path)
    assert "Total params: 1,048,576" in stdout and "Total params: 400" in stdout
    assert "validation accuracy" in stdout and str(tmp_path) in stdout
    assert_pngs(tmp_path, ["cnn_curves.png", "cnn_filters.png", "cnn_feature_maps.png"])


def test_alexnet_example(tmp_path):
    pytest.importorskip("matplotlib")
    stdout = run_example("alexnet.py", tmp_path)
    assert "Total params: 62,378,344" in stdout and "60,965,224" in stdout
    assert "(N, 55, 55, 96)" in stdout and "forward pass, batch 1" in stdout
    assert str(tmp_path) in stdout
    assert_pngs(tmp_path, ["alexnet_conv1_filters.png", "alexnet_feature_maps.png"])


def test_demo_runs_the_cnn_part_after_the_2d_part(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import funcnn.demos as demos
    from funcnn import train

    def instant_fit(model, params, x, y, **kwargs):  # the 2-D training itself is not at stake
        history = {"loss": [1.0], "val_loss": [1.0], "val_accuracy": [0.5]}
        return train.FitResult(params, None, history, 0, 1)

    calls = []

    def fake_cnn_demo(out, *, quick, seed):
        assert (Path(out) / "decision_regions.png").exists()  # the 2-D part ran first
        calls.append((Path(out), quick, seed))
        return {"val_accuracy": 1.0}

    monkeypatch.setattr(train, "fit", instant_fit)
    monkeypatch.setattr(demos, "cnn_demo", fake_cnn_demo)
    result = demos.demo(tmp_path, quick=True, seed=3)
    assert calls == [(tmp_path, True, 3)]
    assert result["cnn"] == {"val_accuracy": 1.0}
