"""Report rendering: learning-curve plots and the Markdown/HTML/CSV/NPZ/JSON report.

Rendering only; the numbers come from :mod:`rltransfer.compare`. Matplotlib is imported
when a plot is drawn, not when this package is imported.
"""

from rltransfer.report.files import atomic_path, write_curves_npz
from rltransfer.report.plots import plot_learning_curves
from rltransfer.report.render import ExtraTable, write_report

__all__ = ["ExtraTable", "atomic_path", "plot_learning_curves", "write_curves_npz", "write_report"]
