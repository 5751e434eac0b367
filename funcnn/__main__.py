"""Command line: ``python -m funcnn demo`` and ``python -m funcnn playground``.

``demo`` is the lecture's 2-D demo: a logistic regression (a linear classifier) and a
network with one tanh hidden layer trained on the two spirals, with their decision
regions saved side by side. Then its convolutional part (:func:`funcnn.demos.cnn_demo`):
the parameter count of a perceptron against a convolution on a 32×32 image, and a
LeNet-style CNN trained on the 8×8 digits, with its filters and feature maps saved.

``playground`` serves the lecture's interactive page on a loopback address: click to add
points, train a linear classifier and an MLP side by side, watch the decision regions.

This module is the command line only: argparse and dispatch. The demos live in
:mod:`funcnn.demos`, the page in :mod:`funcnn.playground`.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import checks
from .demos import demo

__all__ = ["main"]


DESCRIPTION = (
    "funcnn: a small, exact, fast functional neural-network library for JAX. "
    "Run the lecture's demos or serve its interactive page."
)
DEMO = (
    "The lecture's 2-D demo: a linear classifier and a network with one tanh hidden layer "
    "trained on two spirals, their decision regions saved side by side; then a LeNet-style "
    "CNN trained on the 8x8 digits, with its filters and feature maps saved."
)
PLAYGROUND = (
    "The interactive page of the 2-D demo, served on a loopback address: click to add "
    "points, train a linear classifier and an MLP side by side, watch the decision regions."
)


def _prog() -> str:
    """``funcnn`` when run as the installed command, ``python -m funcnn`` otherwise."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "funcnn" if name == "funcnn" else "python -m funcnn"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_demo = sub.add_parser(
        "demo",
        help="the 2-D demo (linear classifier vs one tanh layer), then a CNN on digits",
        description=DEMO,
    )
    p_demo.add_argument("--out", default="funcnn-demo", help="output folder (default: %(default)s)")
    p_demo.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke test")
    p_demo.add_argument(
        "--seed", type=int, default=0, help="seed of the data and weights (default: %(default)s)"
    )
    p_play = sub.add_parser(
        "playground",
        help="the interactive 2-D page, served on loopback",
        description=PLAYGROUND,
    )
    p_play.add_argument(
        "--port", type=_port, default=8000, help="0 to 65535, 0: a free port (default: 8000)"
    )
    p_play.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default: %(default)s)"
    )
    p_play.add_argument("--quiet", action="store_true", help="do not log every request")
    return parser


def _port(text: str) -> int:
    """``--port``: an int in ``[0, 65535]`` (:func:`funcnn.checks.port`); anything else is a
    usage error, not a traceback."""
    value: int | str = text
    try:
        value = int(text)
    except ValueError:
        pass
    try:
        return checks.port(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("port: ")) from None


def _playground(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from .playground import check_loopback, serve

    try:
        check_loopback(args.host)
    except ValueError as e:
        parser.error(str(e))
    try:
        serve(args.host, args.port, verbose=not args.quiet)
    except OSError as e:
        parser.exit(1, f"playground: cannot listen on {args.host}:{args.port}: {e}\n")


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m funcnn demo [--quick] [--out DIR]`` or
    ``python -m funcnn playground [--port N]``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, quick=args.quick, seed=args.seed)
    elif args.command == "playground":
        _playground(parser, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
