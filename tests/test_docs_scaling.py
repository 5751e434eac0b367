"""docs/scaling.md beyond what tests/test_docs.py runs in this process.

* The blocks that need four devices (``<!-- skip-test: needs 4 devices ... -->``) run in
  order, in one Python started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
* The page's ``train.py`` is ``examples/scaling_train.py``, verbatim; the example runs under
  the launcher with two processes of two CPU devices each: over the dataset (each process
  reading half the rows), and over a Grain pipeline stopped after epoch 0 and resumed
  mid-epoch. Its losses are those of the same training in this process, on one device.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from funcnn import data, fit, models

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "scaling.md"
EXAMPLE = ROOT / "examples" / "scaling_train.py"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_support import run_group  # noqa: E402
from test_docs import FENCE  # noqa: E402

FOUR_DEVICES = "skip-test: needs 4 devices"
SEVERAL_PROCESSES = "skip-test: needs several processes"
N, BATCH, PROCESSES = 1024, 64, 2  # the example's --quick sizes


def marked_blocks(marker: str) -> list[tuple[int, str]]:
    """The page's Python blocks preceded by a skip-test line containing ``marker``."""
    text = "\n" + PAGE.read_text(encoding="utf-8")
    return [
        (text[: m.start("code")].count("\n"), m.group("code"))
        for m in FENCE.finditer(text)
        if marker in m.group("before")
    ]


def environment(cache: Path | None = None, devices: int | None = None) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env.pop("XLA_FLAGS", None)
    if devices:
        env |= {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        env |= {"JAX_PLATFORMS": "cpu"}
    if cache is not None:  # the compiled programs shared between the runs
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
    return env


RUN_BLOCKS = """
import json, sys
namespace = {"__name__": "__doc_test__"}
for line, code in json.loads(sys.argv[1]):
    print(f"--- block at line {line}", flush=True)
    exec(compile(code, f"scaling.md:{line}", "exec"), namespace)
"""


def test_the_four_device_blocks_run(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    pytest.importorskip("grain")
    blocks = marked_blocks(FOUR_DEVICES)
    assert len(blocks) >= 5, "sections 5 and 7 have blocks for four devices"
    command = [sys.executable, "-c", RUN_BLOCKS, json.dumps(blocks)]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment(devices=4),
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-5000:]
    assert "CpuDevice(id=3)" in out
    assert "{'data': 4, 'model': 1} P()" in out
    assert "True ['.lock', 'best.npz', 'step_0000000008.npz', 'step_0000000016.npz']" in out
    assert "P(None, 'model') ['.lock', 'best', 'step_0000000008', 'step_0000000016']" in out
    assert "3 P() ['.lock', 'best', 'step_0000000008', 'step_0000000016', 'step_0000000024']" in out
    assert "P('data',) [(16, 2), (16, 2), (16, 2), (16, 2)]" in out
    assert "batch_size = 6 is not divisible by the 4 devices" in out
    assert "90 mod batch_size 32" in out
    assert "the global size of the source's batch 0 of epoch 0 = 6 is not divisible" in out
    assert "written over mesh {'data': 4, 'model': 1}" in out
    assert "this layout is mesh {'data': 2, 'model': 2}" in out and "pass reshard=True" in out


def test_the_page_quotes_the_example_verbatim():
    (block,) = marked_blocks(SEVERAL_PROCESSES)
    assert block[1] == EXAMPLE.read_text(encoding="utf-8")


def launch(out: Path, cache: Path, *args: str) -> str:
    """The example under the launcher, 2 processes × 2 CPU devices; its output."""
    command = [sys.executable, "-m", "funcnn.distributed.launch", "-n", str(PROCESSES)]
    command += ["--cpu-devices", "2", "--timeout", "100", str(EXAMPLE), "--quick"]
    done = run_group([*command, "--out", str(out), *args], 110, environment(cache))
    assert done.returncode == 0, done.stdout[-5000:]
    return done.stdout


def epochs_reported(stdout: str) -> dict[int, list[tuple[int, float, int]]]:
    """``{process: [(epoch, loss, rows read so far), ...]}`` from the example's lines."""
    found: dict[int, list[tuple[int, float, int]]] = {0: [], 1: []}
    pattern = r"^\[(\d)\] process \d/2: epoch (\d+), loss (\S+), (\d+) rows read$"
    for p, epoch, loss, rows in re.findall(pattern, stdout, re.M):
        found[int(p)].append((int(epoch), float(loss), int(rows)))
    return found


def one_device_losses(folder: Path, source: str) -> list[float]:
    """The example's training here, on one device: the dataset's arrays as fit batches them,
    or the global batches the two processes' pipelines make together."""
    ds = data.NpyDataset(sorted(folder.glob("x-*.npy")), sorted(folder.glob("y-*.npy")))
    model = models.mlp([32, 3])
    _, params = model.init(jax.random.key(0), (-1, 2))
    options = dict(optimizer=optax.adam(1e-2), epochs=2, progress=False)
    if source == "dataset":
        x, y = ds.read(np.arange(len(ds)))
        return fit(model, params, x, y, batch_size=BATCH, **options).history["loss"]
    import grain

    shards = [grain.MapDataset.source(ds)[p::PROCESSES] for p in range(PROCESSES)]

    def global_batches(epoch):
        local = [
            s.shuffle(seed=epoch).batch(BATCH // PROCESSES, drop_remainder=True) for s in shards
        ]
        return [tuple(np.concatenate(parts) for parts in zip(*step)) for step in zip(*local)]

    return fit(model, params, global_batches, **options).history["loss"]


def test_the_example_on_two_processes(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    pytest.importorskip("grain")
    out, cache = tmp_path / "out", tmp_path / "compiled"
    dataset = epochs_reported(launch(out, cache, "--source", "dataset"))
    stopped = launch(out, cache, "--source", "grain", "--stop-after-epoch", "0")
    resumed = launch(out, cache, "--source", "grain")
    assert "stopped; run again to resume" in stopped and "resuming" in resumed
    for p in (0, 1):  # each process read its half of the rows, an epoch at a time
        assert [(e, rows) for e, _, rows in dataset[p]] == [(0, N // 2), (1, N)]
    assert dataset[0] == dataset[1]  # the same losses in both processes
    grain_runs = [epochs_reported(stopped), epochs_reported(resumed)]
    for p in (0, 1):  # resumed at step 15 of 16: only the last batch of epoch 0 is read
        assert [(e, rows) for e, _, rows in grain_runs[1][p]] == [(0, 32), (1, 32 + N // 2)]
    expected = {"dataset": one_device_losses(out / "data", "dataset")}
    expected["grain"] = one_device_losses(out / "data", "grain")
    np.testing.assert_allclose([v for _, v, _ in dataset[0]], expected["dataset"], atol=2e-6)
    got = [grain_runs[0][0][0][1], grain_runs[1][0][1][1]]
    np.testing.assert_allclose(got, expected["grain"], atol=2e-6)
    assert grain_runs[1][0][0][1] == grain_runs[0][0][0][1]  # epoch 0's mean, restored
    folder = out / "checkpoints-grain"
    steps = sorted(p.name for p in folder.glob("step_*"))
    assert steps == ["step_0000000025", "step_0000000030", "step_0000000032"]
    assert (folder / ".lock").exists() and not list(folder.glob("*.orbax-checkpoint-tmp*"))
