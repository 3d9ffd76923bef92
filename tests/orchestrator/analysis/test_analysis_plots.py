"""Plots: real PNGs (size, not blank) with a CSV beside each that holds exactly the table's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from orchestrator.analysis.plots import DPI, plot_cumulative, plot_gain
from orchestrator.analysis.render import percent
from orchestrator.analysis.tables import cumulative_table, per_language_table
from orchestrator.analysis.variants import build_inputs


def check_png(path, width_in, height_in=None):
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[1] == pytest.approx(width_in * DPI, abs=1)
    if height_in is not None:
        assert pixels.shape[0] == pytest.approx(height_in * DPI, abs=1)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # lines and bands, not a flat image


def test_cumulative_plot(experiment, tmp_path):
    frame, draws = experiment(n_draws=3, k=3)
    table = cumulative_table(build_inputs(frame, draws), "nli")
    png, csv = plot_cumulative(table, tmp_path)
    assert png.name == "plot-cumulative-nli.png" and csv == png.with_suffix(".csv")
    check_png(png, 8, 5)
    points = pd.read_csv(csv)
    assert list(points.columns) == ["method", "k", "mean", "std"]
    labels = list(dict.fromkeys(c[0] for c in table.frame.columns))
    assert (
        list(dict.fromkeys(points["method"])) == labels == ["S-L", "S-DEV", "S-CA", "S-TDEV", "R-L", "R-CA", "Soup-2"]
    )
    assert len(points) == len(labels) * 3
    for row in points.itertuples(index=False):
        for stat in ("mean", "std"):
            shown = percent(table.frame.loc[row.k, (row.method, stat)])
            assert f"{getattr(row, stat):.1f}" == shown
            assert getattr(row, stat) == pytest.approx(table.frame.loc[row.k, (row.method, stat)] * 100, abs=1e-9)


def test_gain_plot(experiment, tmp_path):
    frame, draws = experiment(n_draws=3, k=3)
    table = per_language_table(build_inputs(frame, draws), "nli", ["s-dev", "r-ca"])
    png, csv = plot_gain(table, tmp_path)
    check_png(png, 6, 4.5)
    points = pd.read_csv(csv)
    assert list(points.columns) == ["dataset", "language", "gain"]
    assert len(points) == 3
    for row in points.itertuples(index=False):
        want = table.frame.loc[(row.dataset, row.language), ("R-CA", "mean")]
        want -= table.frame.loc[(row.dataset, row.language), ("S-DEV", "mean")]
        assert row.gain == pytest.approx(want * 100, abs=1e-9)
    with pytest.raises(ValueError, match="has no column Greedy"):
        plot_gain(table, tmp_path, better="Greedy")
