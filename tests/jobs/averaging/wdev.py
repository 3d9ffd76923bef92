"""A toy averaging method, R-WDEV: the last snapshot of each of the first k runs, weighted by its
English dev score. The acceptance test of the method registry (docs/architecture.md, "How to add an
averaging method"): this module plus one `register_method(WeightedByDev)` call is all it takes.

Not a default method (it is not in jobs.averaging.methods.METHOD_TYPES): the tests register it.
"""
from __future__ import annotations

from typing import Sequence

from jobs.averaging.methods import Method, RunInfo, Selection, last_snapshot


class WeightedByDev(Method):
    """sum(dev_i * last_i) / sum(dev_i) over the first k runs of a draw."""

    family, family_label = "r-wdev", "R-WDEV"

    def select(self, prefix: Sequence[RunInfo]) -> Selection:
        members = [last_snapshot(run) for run in prefix]
        return Selection.weighted(members, [s["dev_score"] for s in members])
