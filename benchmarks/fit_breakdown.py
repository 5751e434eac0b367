"""Where does ``fit``'s scanned epoch spend its time? Workload (c), variants side by side.

    python benchmarks/fit_breakdown.py [--rounds 15] [--device cpu|gpu]

Times one epoch (8,192 points, batch 32, a 2-16-16-2 tanh MLP) of hand-written JAX's plain
``lax.scan`` (unshuffled, and with ``jax.random.permutation``) and of ``fit(scan=True)`` with
its shuffle and non-finite guard switched on and off, interleaved round by round; prints
medians and the ratio to the unshuffled scan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

VARIANTS = {  # name -> fit options (None: a hand-written JAX scan)
    "raw scan, unshuffled": None,
    "raw scan, permutation": None,
    "fit": {},
    "fit, guard off": {"on_nonfinite": "ignore"},
    "fit, unshuffled": {"shuffle": False},
    "fit, unshuffled, guard off": {"shuffle": False, "on_nonfinite": "ignore"},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto")
    args = ap.parse_args(argv)
    from contenders import build_funcnn, build_raw_jax, build_raw_jax_shuffled
    from run import measure, setup_device
    from workloads import batch, make

    setup_device(args.device, "float32")  # --device gpu without a GPU is an error, as in run.py
    import jax

    wl = make("epoch")
    x, y = batch(wl)
    runners = {}
    for name, options in VARIANTS.items():
        if options is None:
            build = build_raw_jax_shuffled if "permutation" in name else build_raw_jax
            runners[name] = build(wl, x, y)
        else:
            runners[name] = build_funcnn(wl, x, y, **options)
    notes: dict[str, str] = {}
    times, _ = measure(wl, runners, args.rounds, 0.3, notes)
    base = times["raw scan, unshuffled"]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {args.rounds} rounds")
    print(f"{'variant':28s} {'epoch ms':>9s} {'÷ raw scan':>11s}")
    for name, t in times.items():
        print(f"{name:28s} {t * 1e3:9.2f} {t / base:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
