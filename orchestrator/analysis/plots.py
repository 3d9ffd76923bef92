"""PNG plots of the tables (matplotlib, Agg backend), each with a CSV beside it holding exactly the plotted points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.analysis.tables import Table

DPI = 100  # pixels per inch of the written PNGs


def _save(figure: Figure, points: pd.DataFrame, png: Path) -> tuple[Path, Path]:
    png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)  # Agg, whatever the process-wide backend is
    figure.savefig(png, dpi=DPI)
    csv = png.with_suffix(".csv")
    points.to_csv(csv, index=False, lineterminator="\n")
    return png, csv


def plot_cumulative(table: Table, out_dir: str | Path) -> tuple[Path, Path]:
    """Score (x100) against k for each method, with a band of one std over draws.

    The CSV beside the PNG has columns method, k, mean, std (x100, unrounded).
    """
    frame = table.frame
    labels = list(dict.fromkeys(col[0] for col in frame.columns))
    points = pd.concat(
        [
            pd.DataFrame(
                {
                    "method": name,
                    "k": frame.index.astype(int),
                    "mean": frame[(name, "mean")].to_numpy(dtype=float) * 100,
                    "std": frame[(name, "std")].to_numpy(dtype=float) * 100,
                }
            )
            for name in labels
        ],
        ignore_index=True,
    )
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    for name, group in points.groupby("method", sort=False):
        line = axes.plot(group["k"], group["mean"], marker="o", markersize=3, label=name)[0]
        std = group["std"].fillna(0.0)  # one draw has no std: draw the line alone
        axes.fill_between(group["k"], group["mean"] - std, group["mean"] + std, color=line.get_color(), alpha=0.15)
    axes.set_xlabel("k (runs averaged or selected among)")
    axes.set_ylabel("mean target score (x100)")
    axes.set_title(table.title, fontsize=9)
    axes.set_xticks(sorted(points["k"].unique()))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    return _save(figure, points, Path(out_dir) / f"plot-{table.name}.png")


def plot_gain(table: Table, out_dir: str | Path, better: str = "R-CA", baseline: str = "S-DEV") -> tuple[Path, Path]:
    """Per target set, the gain (x100) of `better` over `baseline`: a bar chart of a per-language table.

    The CSV beside the PNG has columns dataset, language, gain (x100, unrounded; mean over draws).
    """
    frame = table.frame
    for name in (better, baseline):
        if (name, "mean") not in frame.columns:
            raise ValueError(f"table {table.name} has no column {name}; it has {sorted({c[0] for c in frame.columns})}")
    gain = (frame[(better, "mean")] - frame[(baseline, "mean")]).to_numpy(dtype=float) * 100
    points = pd.DataFrame(
        {
            "dataset": frame.index.get_level_values("dataset"),
            "language": frame.index.get_level_values("language"),
            "gain": gain,
        }
    )
    names = [f"{d}/{lang}" for d, lang in zip(points["dataset"], points["language"])]
    figure = Figure(figsize=(max(6.0, 0.25 * len(points) + 2), 4.5))
    axes = figure.add_subplot()
    colors = np.where(np.nan_to_num(gain) >= 0, "tab:green", "tab:red")
    axes.bar(np.arange(len(points)), np.nan_to_num(gain), color=colors)
    axes.set_xticks(np.arange(len(points)), names, rotation=90, fontsize=7)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_ylabel(f"{better} minus {baseline} (x100)")
    axes.set_title(f"{table.title}: gain of {better} over {baseline}", fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, points, Path(out_dir) / f"plot-gain-{table.name}.png")
