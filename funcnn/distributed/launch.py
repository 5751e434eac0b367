"""Start the processes of a multi-process JAX run: ``python -m funcnn.distributed.launch``.

One machine, two processes with two CPU devices each (four devices in all)::

    python -m funcnn.distributed.launch --processes 2 --cpu-devices 2 train.py --epochs 3

Two machines, two processes each (run on both; ``host0`` is the first machine)::

    # on host0
    python -m funcnn.distributed.launch --processes 4 --local 2 --first-id 0 \\
        --coordinator host0:23456 train.py
    # on host1
    python -m funcnn.distributed.launch --processes 4 --local 2 --first-id 2 \\
        --coordinator host0:23456 train.py

Each process runs ``python train.py ...`` with ``FUNCNN_COORDINATOR``,
``FUNCNN_NUM_PROCESSES`` and ``FUNCNN_PROCESS_ID`` set; the script calls
:func:`funcnn.distributed.initialize` first, which hands them to
:func:`jax.distributed.initialize`. With ``--cpu-devices k`` the processes run on the CPU
with ``k`` devices each (``XLA_FLAGS=--xla_force_host_platform_device_count=k``) and talk
through gloo. On GPUs give each process one GPU with ``--gpu-per-process``.

Output lines are prefixed with ``[p]``, the process id. When any process fails, or the
``--timeout`` passes, the others are stopped, and the launcher exits with the first
failing status.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["free_port", "launch", "main"]


def free_port() -> int:
    """A TCP port that is free on this machine now (the OS picks it).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(process_id: int, args: argparse.Namespace, local_rank: int) -> dict[str, str]:
    env = dict(os.environ)
    env["FUNCNN_COORDINATOR"] = args.coordinator
    env["FUNCNN_NUM_PROCESSES"] = str(args.processes)
    env["FUNCNN_PROCESS_ID"] = str(process_id)
    if args.cpu_devices:
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    if args.gpu_per_process:
        env["CUDA_VISIBLE_DEVICES"] = str(local_rank)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(process: subprocess.Popen, prefix: str) -> None:
    assert process.stdout is not None  # the processes are started with stdout=PIPE
    for line in process.stdout:
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: Sequence[str], args: argparse.Namespace) -> int:
    """Run ``command`` in ``args.local`` processes; return 0 or the first failing status.

    Process ``args.first_id + i`` gets ``FUNCNN_PROCESS_ID``; all of them
    ``FUNCNN_COORDINATOR = args.coordinator`` and ``FUNCNN_NUM_PROCESSES = args.processes``.
    Usually reached through :func:`main`, e.g. ``main(["-n", "2", "train.py"])``.
    """
    processes: list[subprocess.Popen] = []
    pumps = []
    try:
        for rank in range(args.local):
            pid = args.first_id + rank
            p = subprocess.Popen(
                list(command),
                env=_env(pid, args, rank),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append(p)
            pumps.append(threading.Thread(target=_pump, args=(p, f"[{pid}] "), daemon=True))
            pumps[-1].start()
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while True:
            codes = [p.poll() for p in processes]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                print(f"launch: a process exited with {failed[0]}; stopping the rest", flush=True)
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                print(f"launch: timed out after {args.timeout} s; stopping", flush=True)
                return 124
            time.sleep(0.05)
    finally:
        _stop(processes)
        for t in pumps:
            t.join(timeout=1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m funcnn.distributed.launch",
        description="Start the processes of a multi-process JAX run.",
    )
    parser.add_argument("--processes", "-n", type=int, required=True, help="processes in all")
    parser.add_argument("--local", type=int, help="processes on this machine (default: all)")
    parser.add_argument("--first-id", type=int, default=0, help="id of the first local one")
    parser.add_argument("--coordinator", help="host:port of process 0 (default: a free port)")
    parser.add_argument("--cpu-devices", type=int, default=0, help="CPU devices per process")
    parser.add_argument("--gpu-per-process", action="store_true", help="give local process i GPU i")
    parser.add_argument("--timeout", type=float, help="stop everything after this many s")
    parser.add_argument("--module", "-m", action="store_true", help="script is a module name")
    parser.add_argument("script", help="the Python script (or module, with -m) to run")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and launch; returns the exit status.

    Example: ``main(["--processes", "2", "--cpu-devices", "2", "train.py", "--epochs", "3"])``
    runs ``python train.py --epochs 3`` twice, with two CPU devices in each process.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the children
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    args.local = args.processes if args.local is None else args.local
    if not 1 <= args.local <= args.processes - args.first_id:
        parser.error(
            f"--local {args.local} with --first-id {args.first_id} does not fit "
            f"--processes {args.processes}"
        )
    if args.coordinator is None:
        if args.local != args.processes:
            parser.error("--coordinator host:port is needed when processes span machines")
        args.coordinator = f"localhost:{free_port()}"
    if args.cpu_devices < 0:
        parser.error(f"--cpu-devices must be >= 0, got {args.cpu_devices}")
    target = ["-m", args.script] if args.module else [args.script]
    return launch([sys.executable, *target, *args.script_args], args)


if __name__ == "__main__":
    sys.exit(main())
