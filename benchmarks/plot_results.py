"""Plot the ratios of a benchmark run: ``python benchmarks/plot_results.py RESULTS.json OUT.png``.

``RESULTS.json`` is what ``python benchmarks/run.py --json RESULTS.json`` writes. One panel per
workload, one bar per contender: its median time over funcnn's (below 1: faster than funcnn).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402


def plot(results: dict, out: Path) -> Path:
    workloads = results["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.8))
    for ax, w in zip(np.atleast_1d(axes), workloads.values()):
        rows = sorted(w["rows"].items(), key=lambda kv: kv[1]["ratio_to_funcnn"])
        names = [k for k, _ in rows]
        ratios = [v["ratio_to_funcnn"] for _, v in rows]
        colors = ["tab:green" if k == "funcnn" else "tab:gray" for k in names]
        ax.barh(names, ratios, color=colors)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ticks = [
            t
            for t in (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100)
            if min(ratios) / 1.5 <= t <= max(ratios) * 1.5
        ]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        for i, r in enumerate(ratios):
            ax.text(r, i, f" {r:.2f}", va="center", fontsize=7)
        ax.set_title(w["title"].split(",")[0], fontsize=9)
        ax.set_xlabel("time ÷ funcnn's (log)")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])))
