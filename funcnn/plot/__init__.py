"""Pictures with matplotlib (an optional extra: ``pip install funcnn[examples]``).

Nothing in the core imports this module. Every function that draws a whole figure saves
it as a PNG (``computational_graph`` also as SVG) and returns the saved path.

The pictures, by subject, each a module of this package: ``regions`` (decision regions),
``training`` (training curves), ``features`` (filters and feature maps), ``backprop``
(computational graphs and gradient norms); ``figures`` loads matplotlib and saves.
"""

from __future__ import annotations

# isort: off
# in the order the API reference lists them (it follows the imports)
from .figures import require_matplotlib, save
from .regions import grid, decision_regions, side_by_side
from .training import curves, curve_panels, loss_vs_steps_and_time
from .features import filters, feature_maps
from .backprop import graph_layout, computational_graph, grad_norms

# isort: on

__all__ = [
    "require_matplotlib",
    "grid",
    "decision_regions",
    "side_by_side",
    "curves",
    "save",
    "filters",
    "feature_maps",
    "curve_panels",
    "loss_vs_steps_and_time",
    "computational_graph",
    "graph_layout",
    "grad_norms",
]
