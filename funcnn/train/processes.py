"""What the processes of a run over several tell each other about their data sources.

Each process iterates its own source; the steps are collectives, so a process with a batch
where another has none (or one of another size) would wait for the other for ever. Before
each step the processes compare their batch sizes (:func:`agree_on_batch`, one small
collective); a process that fails reading or checking its batch says so in that same
collective (:func:`report_failure`), so every process stops with an error. A checkpoint holds
every process's iterator position (:func:`gather_json`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FAILED = -1  # the size a process reports when it failed to produce its batch


class SourcesDisagree(ValueError):
    """The processes' sources have batches of different sizes at one step (or one has
    ended, or failed); every process raises it at the same step."""


def all_values(value: int) -> list[int]:
    """``value`` from every process, in process order (a collective)."""
    from jax.experimental import multihost_utils

    return np.ravel(multihost_utils.process_allgather(np.asarray(value, np.int32))).tolist()


def agree_on_batch(rows: int, epoch: int, step: int) -> None:
    """Every process has a batch of ``rows`` rows for step ``step`` (``0``: its source
    ended), or all raise :class:`SourcesDisagree`."""
    every = all_values(rows)
    if any(v != every[0] for v in every):
        raise SourcesDisagree(
            f"fit: the processes' sources disagree at batch {step} of epoch {epoch}: their "
            f"local batches have {every} rows (0: the source ended, {FAILED}: it failed, "
            "with its own error); each process must yield as many batches, of the same "
            "sizes (for a Grain pipeline: shards of equal size, or drop_remainder=True)"
        )


def report_failure() -> None:
    """Tell the other processes, at their next :func:`agree_on_batch`, that this one failed."""
    all_values(FAILED)


def gather_json(value: Any) -> list:
    """Every process's JSON-able ``value``, in process order (a collective).

    Each process's JSON text is padded with NUL bytes to the longest one's length, and the
    padded texts are gathered as one ``uint8`` array of a row per process.
    """
    from jax.experimental import multihost_utils

    own = np.frombuffer(json.dumps(value).encode(), np.uint8)
    longest = max(all_values(len(own)))
    padded = np.zeros(longest, np.uint8)
    padded[: len(own)] = own
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, longest)
    return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in every]
