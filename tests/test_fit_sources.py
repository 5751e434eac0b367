"""``fit`` on data sources: a dataset read at random trains exactly as the same arrays in
memory; an iterable of batches (a list, a function of the epoch, a Grain pipeline) trains
as a hand-written loop of ``train_step`` over the same batches; resume is exact, the
iterator's position included; bad sources get clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import funcnn as fn
from funcnn import data, models

N, B, EPOCHS = 100, 32, 3
HERE = Path(__file__).resolve().parent


class Rows:
    """A dataset read at random from arrays (the protocol of funcnn.data's file readers)."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = np.asarray(x), np.asarray(y), []

    def __len__(self):
        return len(self.x)

    def read(self, idx):
        self.reads.append(np.asarray(idx))
        return self.x[idx], self.y[idx]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def fingerprint(self):
        return [len(self.x), float(self.x.sum())]

    def __repr__(self):  # Grain checks a restored loader's source by its repr
        return f"Rows(n={len(self.x)})"


def problem(dropout=0.0):
    x, y = data.spirals(N, key=0)
    xv, yv = data.spirals(60, key=1)
    model = models.mlp([8, 2], activation="tanh", dropout=dropout)
    _, params = model.init(jax.random.key(0), (-1, 2))
    return model, params, x, y, (xv, yv)


OPTIONS = dict(optimizer=optax.sgd(0.1), epochs=EPOCHS, progress=False)


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def assert_same_run(a, b):
    for p, q in zip(leaves(a.params), leaves(b.params)):
        np.testing.assert_array_equal(p, q)
    assert a.history == b.history


@pytest.mark.parametrize("scan", [False, True])
def test_a_dataset_trains_exactly_as_the_arrays(scan):
    model, params, x, y, val = problem(dropout=0.2)  # dropout: the step keys agree too
    arrays = fn.fit(model, params, x, y, batch_size=B, scan=scan, validation_data=val, **OPTIONS)
    ds = Rows(x, y)
    streamed = fn.fit(model, params, ds, batch_size=B, scan=scan, validation_data=val, **OPTIONS)
    assert_same_run(arrays, streamed)
    # only what the steps use is read, each example once an epoch, several batches a read
    assert np.bincount(np.concatenate(ds.reads), minlength=N).tolist() == [EPOCHS] * N
    assert EPOCHS <= len(ds.reads) < EPOCHS * 4
    from_source = fn.fit(
        model, params, ds, batch_size=B, scan=scan, validation_data=Rows(*val), **OPTIONS
    )
    for k in arrays.history:
        np.testing.assert_allclose(arrays.history[k], from_source.history[k], rtol=1e-6)


def hand_loop(model, params, epochs_of_batches, key=0):
    """train_step over the given batches, step s of epoch e keyed as fit keys it."""
    opt = OPTIONS["optimizer"]
    step = fn.train_step(model, model.loss, opt)
    p, o, losses = params, opt.init(params), []
    for e, batches in enumerate(epochs_of_batches):
        k_e = jax.random.fold_in(jax.random.key(key), e)
        total = 0.0
        for s, (xb, yb) in enumerate(batches):
            p, o, logs = step(p, o, (xb, yb), jax.random.fold_in(k_e, s + 1))
            total += float(logs["loss"]) * len(xb)
        losses.append(total / sum(len(xb) for xb, _ in batches))
    return p, losses


@pytest.mark.parametrize("scan", [False, True])
def test_an_iterable_of_batches_trains_as_a_hand_written_loop(scan):
    model, params, x, y, _ = problem()
    order = [np.random.default_rng(e).permutation(N) for e in range(EPOCHS)]

    def epoch_batches(e):  # a new order each epoch; a short last batch
        idx = order[e]
        return [(x[idx[i : i + B]], y[idx[i : i + B]]) for i in range(0, N, B)]

    result = fn.fit(model, params, epoch_batches, scan=scan, **OPTIONS)
    p, losses = hand_loop(model, params, [epoch_batches(e) for e in range(EPOCHS)])
    for a, b in zip(leaves(result.params), leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history["loss"], losses, rtol=1e-5)
    fixed = fn.fit(model, params, epoch_batches(0), scan=scan, **OPTIONS)  # a list: every epoch
    p, losses = hand_loop(model, params, [epoch_batches(0)] * EPOCHS)
    np.testing.assert_allclose(fixed.history["loss"], losses, rtol=1e-5)


def grain_pipeline(x, y, seed=0):
    grain = pytest.importorskip("grain")
    return grain.MapDataset.source(Rows(x, y)).shuffle(seed=seed).batch(B)


def test_a_grain_dataset_trains_as_its_batches():
    model, params, x, y, val = problem()
    ds = grain_pipeline(x, y)
    batches = [(np.asarray(bx), np.asarray(by)) for bx, by in ds]
    assert [len(bx) for bx, _ in batches] == [32, 32, 32, 4]
    result = fn.fit(model, params, ds, validation_data=grain_pipeline(*val), **OPTIONS)
    listed = fn.fit(model, params, batches, validation_data=val, **OPTIONS)
    assert_same_run_loose(result, listed)


def assert_same_run_loose(a, b):
    for p, q in zip(leaves(a.params), leaves(b.params)):
        np.testing.assert_array_equal(p, q)
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-6)


class Counted:
    """An iterable whose iterator saves and restores its position, counting restores."""

    restores = 0

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return CountedIterator(self.batches)


class CountedIterator:
    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def __next__(self):
        if self.i == len(self.batches):
            raise StopIteration
        self.i += 1
        return self.batches[self.i - 1]

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        Counted.restores += 1
        self.i = state["i"]


def killed_run(folder, source_kind):
    """A run (in a child process) that SIGKILLs itself as it reads epoch 2's first batch;
    with 4 steps an epoch and a checkpoint every 3, its last is after step 1 of epoch 1."""
    model, params, x, y, _ = problem()
    source = make_source(source_kind, x, y, kill_at=(2, 0))
    fn.fit(model, params, source, checkpoint_dir=folder, checkpoint_every=3, **OPTIONS)


def grain_loader(x, y, seed=0):
    """A Grain ``DataLoader`` (in this process): each ``iter`` is one pass, shuffled."""
    grain = pytest.importorskip("grain")
    sampler = grain.samplers.IndexSampler(N, shuffle=True, seed=seed, num_epochs=1)
    batch = grain.transforms.Batch(B, drop_remainder=False)
    return grain.DataLoader(
        data_source=Rows(x, y), sampler=sampler, operations=[batch], worker_count=0
    )


def test_a_grain_loader_trains_as_its_batches():
    model, params, x, y, _ = problem()
    loader = grain_loader(x, y)
    batches = [(np.asarray(bx), np.asarray(by)) for bx, by in loader]
    result = fn.fit(model, params, loader, **OPTIONS)
    assert_same_run_loose(result, fn.fit(model, params, batches, **OPTIONS))


def make_source(kind, x, y, kill_at=None):
    batches = [(x[i : i + B], y[i : i + B]) for i in range(0, N, B)]
    if kind == "grain":
        return Killing(grain_pipeline(x, y), kill_at)
    if kind == "loader":
        return Killing(grain_loader(x, y), kill_at)
    return Killing(Counted(batches), kill_at)


class Killing:
    """Iterates ``inner`` and SIGKILLs the process at batch ``kill_at = (epoch, step)``."""

    def __init__(self, inner, kill_at):
        self.inner, self.kill_at, self.epoch = inner, kill_at, -1

    def __iter__(self):
        self.epoch += 1
        return KillingIterator(iter(self.inner), self)


class KillingIterator:
    def __init__(self, it, owner):
        self.it, self.owner, self.step = it, owner, 0

    def __next__(self):
        if self.owner.kill_at == (self.owner.epoch, self.step):
            os.kill(os.getpid(), 9)
        self.step = None if self.step is None else self.step + 1
        return next(self.it)

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)
        self.step = None  # no kill after a restore


@pytest.mark.parametrize("kind", ["counted", "grain", "loader"])
def test_a_killed_run_resumes_exactly_with_the_iterators_position(tmp_path, kind):
    if kind != "counted":
        pytest.importorskip("grain")
    folder = tmp_path / "run"
    code = f"import test_fit_sources as t; t.killed_run({str(folder)!r}, {kind!r})"
    child = subprocess.run([sys.executable, "-c", code], cwd=HERE, timeout=300)
    assert child.returncode == -9  # killed, not finished
    saved = fn.checkpoint.load_meta(sorted(folder.glob("step_*.npz"))[-1])
    assert (saved["epoch"], saved["step"]) == (1, 2)  # the run's step 6
    assert saved["data_state"] == {"done": 4, "position": saved["data_state"]["position"]}
    assert saved["data_state"]["position"] is not None
    model, params, x, y, _ = problem()
    Counted.restores = 0
    resumed = fn.fit(
        model,
        params,
        make_source(kind, x, y),
        checkpoint_dir=folder,
        checkpoint_every=3,
        resume=True,
        **OPTIONS,
    )
    whole = fn.fit(model, params, make_source(kind, x, y), **OPTIONS)
    assert_same_run(resumed, whole)
    if kind == "counted":
        assert Counted.restores == 1


def test_bad_sources_get_clear_errors():
    model, params, x, y, _ = problem()
    with pytest.raises(ValueError, match="changed shape in epoch 0: batch 1"):
        fn.fit(model, params, [(x[:8], y[:8]), (x[:16], y[:16])], **OPTIONS)
    with pytest.raises(ValueError, match="only the last batch"):
        fn.fit(model, params, [(x[:8], y[:8]), (x[:4], y[:4]), (x[:8], y[:8])], **OPTIONS)
    with pytest.raises(ValueError, match=r"batch 0 of epoch 0 holds class labels in \[0, 5\]"):
        fn.fit(model, params, [(x[:8], np.arange(8) % 6)], **OPTIONS)
    with pytest.raises(ValueError, match="yielded no batch in epoch 1"):
        fn.fit(model, params, iter([(x[:8], y[:8])]), **OPTIONS)  # used up after one pass
    with pytest.raises(ValueError, match="pass y=None"):
        fn.fit(model, params, Rows(x, y), y, **OPTIONS)
    with pytest.raises(ValueError, match="makes its own; pass batch_size=None"):
        fn.fit(model, params, [(x[:8], y[:8])], batch_size=4, **OPTIONS)
    with pytest.raises(ValueError, match="expected a pair"):
        fn.fit(model, params, [(x[:8], y[:8], y[:8])], **OPTIONS)
    with pytest.raises(ValueError, match="holds no examples"):
        fn.fit(model, params, Rows(x[:0], y[:0]), batch_size=4, **OPTIONS)


def test_a_resume_on_another_dataset_is_refused(tmp_path):
    model, params, x, y, _ = problem()
    fn.fit(model, params, Rows(x, y), batch_size=B, checkpoint_dir=tmp_path, **OPTIONS)
    with pytest.raises(ValueError, match="other data"):
        fn.fit(
            model,
            params,
            Rows(x + 1, y),
            batch_size=B,
            checkpoint_dir=tmp_path,
            resume=True,
            **{**OPTIONS, "epochs": EPOCHS + 1},
        )


@pytest.mark.parametrize("scan", [False, True])
def test_early_stopping_and_the_guard_work_as_with_arrays(scan):
    model, params, x, y, val = problem()
    options = {**OPTIONS, "epochs": 12, "optimizer": optax.adam(0.3)}
    stopping = dict(batch_size=B, scan=scan, validation_data=val, patience=2, **options)
    arrays = fn.fit(model, params, x, y, **stopping)
    streamed = fn.fit(model, params, Rows(x, y), **stopping)
    assert arrays.epochs_run < 12  # it did stop early
    assert_same_run(arrays, streamed)
    assert (arrays.best_epoch, arrays.epochs_run) == (streamed.best_epoch, streamed.epochs_run)
    # a linear model, squared error and a step far too large: the loss overflows
    linear = models.mlp([1])
    _, p = linear.init(jax.random.key(0), (-1, 2))
    xs, ys = 10 * x, np.asarray(y, np.float32)[:, None]
    diverging = dict(loss=fn.losses.mse, metrics={}, batch_size=B, scan=scan)
    diverging |= {**OPTIONS, "optimizer": optax.sgd(0.5), "epochs": 30}
    errors = []
    for data_x, data_y in ((xs, ys), (Rows(xs, ys), None)):
        with pytest.raises(fn.NonFiniteError) as err:
            fn.fit(linear, p, data_x, data_y, **diverging)
        errors.append(err.value)
    assert (errors[0].epoch, errors[0].step) == (errors[1].epoch, errors[1].step)
    for a, b in zip(leaves(errors[0].params), leaves(errors[1].params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("source", ["dataset", "iterable"])
def test_scanned_chunks_cut_at_checkpoints_and_resume_exactly(tmp_path, source):
    """Scanned chunks end where a checkpoint is due (every 3 steps, 4 steps an epoch);
    a run continued from its checkpoints ends as an unbroken one."""
    model, params, x, y, _ = problem()
    batches = [(x[i : i + B], y[i : i + B]) for i in range(0, N, B)]
    data = (lambda: (Rows(x, y),)) if source == "dataset" else (lambda: (Counted(batches),))
    size = {"batch_size": B} if source == "dataset" else {}
    common = dict(scan=True, **size, **OPTIONS)
    whole = fn.fit(model, params, *data(), **{**common, "epochs": 3})
    fn.fit(
        model,
        params,
        *data(),
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
        **{**common, "epochs": 2},
    )
    saved = sorted(int(f.stem[5:]) for f in tmp_path.glob("step_*.npz"))
    assert saved[-1] == 8 and 6 in saved  # mid-epoch 1 and the last epoch's end
    (tmp_path / f"step_{8:010d}.npz").unlink()  # resume from the middle of epoch 1
    resumed = fn.fit(
        model,
        params,
        *data(),
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
        resume=True,
        **{**common, "epochs": 3},
    )
    assert_same_run(whole, resumed)


def test_a_bad_reshard_is_named():
    model, params, x, y, _ = problem()
    with pytest.raises(TypeError, match="fit: reshard"):
        fn.fit(model, params, x, y, reshard="yes", **OPTIONS)
