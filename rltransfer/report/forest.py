"""A forest plot of gains over the baseline: one panel per experiment, one interval per target and arm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rltransfer.report.files import atomic_path

# The flag decides the colour: the reader finds the significant intervals without reading numbers.
FLAG_COLOURS = {"positive": "tab:green", "NEGATIVE": "tab:red", "": "0.45"}


@dataclass(frozen=True)
class Interval:
    label: str  # e.g. "long · finetune"
    value: float
    low: float
    high: float
    flag: str = ""  # "positive", "NEGATIVE" or "" (the interval spans zero)


def plot_forest(
    panels: Mapping[str, Sequence[Interval]], path: str | Path, xlabel: str = "gain over scratch", dpi: int = 110
) -> Path:
    """Write one PNG: a panel per key of ``panels`` (its title), each interval a horizontal bar with
    its point estimate, coloured by flag, with a line at zero. Panels keep their own x-range, since
    returns differ in scale between families. Written atomically; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [max(len(rows), 1) for rows in panels.values()]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7.5, 0.6 + 0.28 * sum(heights) + 0.55 * len(panels)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    try:
        for ax, (title, rows) in zip(axes[:, 0], panels.items(), strict=True):
            for y, row in enumerate(reversed(rows)):  # the first row on top
                colour = FLAG_COLOURS.get(row.flag, FLAG_COLOURS[""])
                ax.plot([row.low, row.high], [y, y], color=colour, linewidth=2.2, solid_capstyle="butt")
                ax.plot([row.value], [y], "o", color=colour, markersize=4.5)
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.set_yticks(range(len(rows)), [row.label for row in reversed(rows)], fontsize="small")
            ax.set_ylim(-0.7, len(rows) - 0.3)
            ax.set_title(title, fontsize="medium", loc="left")
            ax.grid(axis="x", alpha=0.3)
        axes[-1, 0].set_xlabel(xlabel)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path
