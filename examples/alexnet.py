"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012): its layer table and one forward pass.

Prints the summary on a 227×227×3 image (the paper's shapes, 62,378,344 parameters in the
single-tower form; 60,965,224 with the paper's two-tower grouped convolutions), times one
compiled forward pass, and saves the (untrained) conv1 filters and the feature maps of a
synthetic image after each convolution.

    python examples/alexnet.py [--quick] [--out DIR] [--batch N]

``--quick`` fills the weights with cheap N(0, 0.01²) noise from numpy instead of drawing
them with ``init`` (a forward pass costs the same for any values) and times batch 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import funcnn  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import inspect, models, plot

SHAPE = (-1, 227, 227, 3)


def noise_params(model, seed: int = 0):
    """Params of the model's shapes filled with N(0, 0.01²) noise, without running init."""
    _, shapes = jax.eval_shape(lambda k: model.init(k, SHAPE), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.01 * rng.standard_normal(s.shape, dtype=np.float32)), shapes
    )


def synthetic_image() -> np.ndarray:
    """A 227×227 RGB test picture: a colour ramp with a bright disc and diagonal stripes."""
    u, v = np.meshgrid(np.linspace(0, 1, 227), np.linspace(0, 1, 227))
    disc = ((u - 0.35) ** 2 + (v - 0.4) ** 2 < 0.04).astype(np.float32)
    stripes = (np.sin(40 * (u + v)) > 0).astype(np.float32) * (u > 0.6)
    return np.stack([u, v, 0.5 * disc + 0.5 * stripes], axis=-1)[None].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="noise weights and batch 1")
    parser.add_argument("--out", default="out/alexnet", help="folder for the PNGs")
    parser.add_argument("--batch", type=int, default=8, help="batch size to time")
    args = parser.parse_args(argv)
    out = Path(args.out)

    model = models.alexnet()
    print(inspect.summary(model, SHAPE))
    towers = inspect.summary(models.alexnet(two_towers=True), SHAPE).total
    print(f"with the paper's two-tower grouped convolutions: {towers:,} parameters\n")

    start = time.perf_counter()
    if args.quick:
        params = noise_params(model)
    else:
        _, params = model.init(jax.random.key(0), SHAPE)
    jax.block_until_ready(params)
    print(f"weights ready in {time.perf_counter() - start:.1f} s")

    batch = 1 if args.quick else args.batch
    x = jnp.asarray(np.repeat(synthetic_image(), batch, axis=0))
    forward = jax.jit(lambda p, x: model.apply(p, x))
    start = time.perf_counter()
    jax.block_until_ready(forward(params, x))
    compiled = time.perf_counter() - start
    runs = 1 if args.quick else 5
    start = time.perf_counter()
    for _ in range(runs):
        jax.block_until_ready(forward(params, x))
    seconds = (time.perf_counter() - start) / runs
    print(
        f"forward pass, batch {batch} on {jax.devices()[0].platform}: {seconds * 1e3:.1f} ms "
        f"({compiled:.1f} s for the first call, compilation included)"
    )

    maps = inspect.feature_maps(model, params, x[:1])
    for name, path in {
        "conv1 filters": plot.filters(
            params["conv1"]["w"],
            out / "alexnet_conv1_filters.png",
            title="conv1 (untrained)",
            columns=12,
        ),
        "feature maps": plot.feature_maps(
            maps, out / "alexnet_feature_maps.png", image=x[0], max_channels=6
        ),
    }.items():
        print(f"{name} saved to {path}")
    print(f"pictures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
