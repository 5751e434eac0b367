"""Toy sets, splits and minibatches."""

from __future__ import annotations

import numpy as np
import pytest

from funcnn import data


@pytest.mark.parametrize("name", sorted(data.TOY_SETS))
def test_toy_sets_deterministic_balanced_and_shaped(name):
    make = data.TOY_SETS[name]
    x, y = make(101, key=3)
    x2, y2 = make(101, key=3)
    x3, _ = make(101, key=4)
    assert x.shape == (101, 2) and x.dtype == np.float32
    assert y.shape == (101,) and y.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, x3)
    assert set(np.unique(y)) == {0, 1}
    assert abs(int(np.sum(y == 1)) - int(np.sum(y == 0))) <= 1 or name == "xor"


def test_spirals_geometry():
    x, y = data.spirals(200, key=0, noise=0.0)
    r = np.linalg.norm(x, axis=1)
    assert r.min() >= 0.1 - 1e-6 and r.max() <= 1.0 + 1e-6
    # the second spiral is the first rotated by π: x ↦ −x maps one class onto the other
    a = {tuple(np.round(p, 5)) for p in x[y == 0]}
    b = {tuple(np.round(-p, 5)) for p in x[y == 1]}
    assert a == b


def test_xor_labels_follow_quadrants():
    x, y = data.xor(300, key=1)
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(int))


def test_train_val_split_partitions_the_data():
    x = np.arange(50, dtype=np.float32)[:, None]
    y = np.arange(50)
    (xt, yt), (xv, yv) = data.train_val_split(x, y, 0.2, key=0)
    assert len(xv) == 10 and len(xt) == 40
    assert sorted(np.concatenate([yt, yv]).tolist()) == list(range(50))
    np.testing.assert_array_equal(xt[:, 0], yt)


def test_batches_cover_every_example_once():
    x, y = np.arange(10)[:, None], np.arange(10)
    sizes, seen = [], []
    for xb, yb in data.batches(x, y, 4, key=1):
        sizes.append(len(xb))
        seen += yb.tolist()
    assert sizes == [4, 4, 2] and sorted(seen) == list(range(10)) and seen != list(range(10))
    assert [len(b[0]) for b in data.batches(x, y, 4, drop_remainder=True)] == [4, 4]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: data.spirals(1), "n must be an int >= 2"),
        (lambda: data.train_val_split(np.ones((4, 2)), np.ones(3)), "same length"),
        (lambda: data.train_val_split(np.ones((4, 2)), np.ones(4), 1.5), "val_fraction"),
        (lambda: list(data.batches(np.ones((4, 2)), np.ones(4), 0)), "batch_size"),
        (lambda: list(data.batches(np.ones((0, 2)), np.ones(0), 2)), "empty"),
        (lambda: data.spirals(10, key="seed"), "key"),
    ],
)
def test_bad_data_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 100, 1000, 4097])
def test_shuffle_is_a_permutation(n):
    import jax

    perm = np.asarray(data.shuffle(jax.random.key(n), n))
    assert sorted(perm.tolist()) == list(range(n))
    jitted = np.asarray(jax.jit(data.shuffle, static_argnums=1)(jax.random.key(n), n))
    np.testing.assert_array_equal(perm, jitted)


def test_shuffle_positions_are_uniform_and_keys_differ():
    import jax

    n, trials = 8, 4000
    keys = jax.random.split(jax.random.key(0), trials)
    perms = np.asarray(jax.vmap(lambda k: data.shuffle(k, n))(keys))
    # every element lands in every position about trials/n times: a chi-square test over
    # the 8×8 table (49 degrees of freedom; the 0.999 quantile is about 85.4)
    counts = np.stack([np.bincount(perms[:, j], minlength=n) for j in range(n)])
    expected = trials / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 85.4, chi2
    # distinct keys give distinct orders (8! = 40320 orders; collisions are rare)
    assert len({tuple(p) for p in perms.tolist()}) > 0.9 * trials
    # neighbours are not kept together: i and i+1 rarely stay adjacent
    adjacent = np.mean(
        np.abs(np.argsort(perms, axis=1)[:, 1:] - np.argsort(perms, axis=1)[:, :-1]) == 1
    )
    assert adjacent < 0.4


def test_shuffle_bad_n():
    import jax

    with pytest.raises(ValueError, match="shuffle: n must be a positive int"):
        data.shuffle(jax.random.key(0), 0)
