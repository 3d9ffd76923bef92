"""The averaging methods: one registry, one object per method (PROTOCOL.md "One name for each thing").

Everything that needs to know a method asks here: job specs and the experiment config check ids
with `get_method` (the one parser of `soup-N`), the average job asks each method for the members
of its averages (`Method.select`), the orchestrator asks which methods need forward passes (a GPU
job), and the tables take labels and column order from here. The selection baselines (S-L, S-DEV,
S-CA, S-TDEV) pick a run instead of averaging anything: they live in orchestrator/analysis/tables.py.

Light on purpose: no torch or transformers at import, the orchestrator's CLI imports this module.

Adding a method (docs/architecture.md, "How to add an averaging method"): a `Method` subclass in a
module of its own, and its class in `METHOD_TYPES`. Code that must not change the default set (an
experiment, a test) calls `register_method(cls)` instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence

from jobs import layout
from jobs.averaging.errors import AverageError
from jobs.errors import SpecError

# The three shapes of average job (AverageSpec.mode); each method belongs to one of them.
RUN_AVERAGES, DRAWS, EXPLICIT = "run-averages", "draws", "explicit"
MODES = (RUN_AVERAGES, DRAWS, EXPLICIT)

# A run's info is the run-sum manifest of a finished run (jobs.averaging.members.run_info): run_key,
# count, head_sha256, spec and its snapshots, each {"ref", "sha256", "dev_score", "step"}.
RunInfo = Mapping[str, Any]
Snapshot = Mapping[str, Any]


class MethodIdError(SpecError):
    """A method id that names no method. `problem` is the message without the field it came
    from; `canonical` the id it should have been written as (soup-05 -> soup-5), if any."""

    def __init__(self, where: str | None, problem: str, canonical: str | None = None, unknown: bool = False):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem, self.canonical, self.unknown = problem, canonical, unknown


@dataclass(frozen=True)
class Selection:
    """What one averaged model holds: the sum of `terms` (input ref, weight) divided by
    `divisor`, made of the snapshots `members` (its manifest's constituents and count)."""

    members: tuple[Snapshot, ...]
    terms: tuple[tuple[str, float], ...]
    divisor: float
    manifest: Mapping[str, Any] = field(default_factory=dict)  # extra manifest fields (soup's top_n, greedy's trace)

    @classmethod
    def uniform(cls, members: Sequence[Snapshot], **manifest) -> "Selection":
        members = tuple(members)
        return cls(members, tuple((s["ref"], 1.0) for s in members), float(len(members)), manifest)

    @classmethod
    def weighted(cls, members: Sequence[Snapshot], weights: Sequence[float], **manifest) -> "Selection":
        """sum(w_i * x_i) / sum(w_i). The engine streams weighted terms exactly as uniform ones."""
        members, weights = tuple(members), tuple(float(w) for w in weights)
        if len(weights) != len(members) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise AverageError(f"weights {list(weights)} of {len(members)} snapshots: need one finite weight >= 0 each, not all 0")
        return cls(members, tuple((s["ref"], w) for s, w in zip(members, weights)), sum(weights), manifest)


def last_snapshot(run: RunInfo) -> Snapshot:
    return max(run["snapshots"], key=lambda s: s["step"])


def best_snapshot(run: RunInfo) -> Snapshot:
    """The snapshot with the best English dev score; the earliest wins a tie."""
    snaps = sorted(run["snapshots"], key=lambda s: s["step"])
    return max(snaps, key=lambda s: s["dev_score"])  # max keeps the first of equal scores


def ranked_snapshots(runs: Sequence[RunInfo]) -> list[Snapshot]:
    """Snapshots of these runs by English dev score, best first; ties: draw order, then step."""
    ordered = [s for run in runs for s in sorted(run["snapshots"], key=lambda s: s["step"])]
    return sorted(ordered, key=lambda s: -s["dev_score"])  # stable


class Method:
    """One averaging method. A subclass sets the class attributes and says how it chooses members,
    in one of two ways:

    - `select(prefix) -> Selection`: draw methods (mode "draws") average, for every k = 1..K of a
      draw, snapshots of the draw's first k runs; `prefix` is those runs' infos in draw order.
    - `select_all(store, spec, runs, cache) -> {k: Selection}`, with `needs_forward_passes = True`:
      a method that scores candidate models to pick its members (greedy soup) does every k in one
      go; it also overrides `possible_inputs`.

    A parametric family (`parameter` set) also has a classmethod `from_parameter(text, method_id,
    where)` that parses the text after `family-` (TopNSoup: soup-N)."""

    family: ClassVar[str]  # the id; for a method with a parameter, the id's stem (soup -> soup-N)
    family_label: ClassVar[str]  # the table label (PROTOCOL.md)
    mode: ClassVar[str] = DRAWS  # the AverageSpec mode whose job computes it
    needs_forward_passes: ClassVar[bool] = False  # picks members by scoring models: a GPU job on a cluster
    parameter: ClassVar[Optional[str]] = None  # a parametric family's parameter name: ids are family-<parameter>

    @property
    def id(self) -> str:
        return self.family

    @property
    def label(self) -> str:
        return self.family_label

    @property
    def parameter_value(self) -> Optional[int]:
        """A parametric method's parameter (soup-5: 5); None for the others."""
        return None

    @property
    def nominal_count(self) -> Optional[int]:
        """How many snapshots each average holds by design (soup-N: N); None when the runs decide."""
        return None

    def possible_inputs(self, prefix: Sequence[RunInfo]) -> set[str]:
        """Every input ref an average over these runs may read (gc keeps them)."""
        return {ref for ref, _ in self.select(prefix).terms}

    def too_few_snapshots(self, per_run: Sequence[int]) -> bool:
        """Whether the draw's runs (snapshot counts in draw order) can never give its nominal count."""
        return self.nominal_count is not None and self.nominal_count > sum(per_run)

    def short_prefixes(self, per_run: Sequence[int]) -> list[int]:
        """The k whose first k runs hold fewer snapshots than the nominal count (those averages hold them all)."""
        n = self.nominal_count
        return [] if n is None else [k for k in range(1, len(per_run) + 1) if sum(per_run[:k]) < n]


class AllOfRuns(Method):
    """R-CA: every snapshot of the first k runs, from their run-sums (one read per run)."""

    family, family_label = "r-ca", "R-CA"

    def select(self, prefix: Sequence[RunInfo]) -> Selection:
        members = tuple(s for run in prefix for s in run["snapshots"])
        terms = tuple((layout.run_sum_ref(run["run_key"]), 1.0) for run in prefix)
        return Selection(members, terms, float(sum(run["count"] for run in prefix)))


class RunCA(AllOfRuns):
    """CA: the uniform average of all snapshots of one run (its run-sum over its count)."""

    family, family_label, mode = "ca", "CA", RUN_AVERAGES


class LastOfRuns(Method):
    """R-L: the last snapshot of each of the first k runs."""

    family, family_label = "r-last", "R-L"

    def select(self, prefix: Sequence[RunInfo]) -> Selection:
        return Selection.uniform([last_snapshot(run) for run in prefix])


class BestDevOfRuns(Method):
    """R-DEV: the best-English-dev snapshot of each of the first k runs."""

    family, family_label = "r-dev", "R-DEV"

    def select(self, prefix: Sequence[RunInfo]) -> Selection:
        return Selection.uniform([best_snapshot(run) for run in prefix])


@dataclass(frozen=True)
class TopNSoup(Method):
    """Soup-N: the N snapshots with the best English dev score among the first k runs (all of
    them where those runs hold fewer: the manifest's count < top_n says so)."""

    n: int = 5
    family: ClassVar[str] = "soup"
    family_label: ClassVar[str] = "Soup-N"
    parameter: ClassVar[Optional[str]] = "N"

    @property
    def id(self) -> str:
        return f"soup-{self.n}"

    @property
    def label(self) -> str:
        return f"Soup-{self.n}"

    @property
    def parameter_value(self) -> int:
        return self.n

    @property
    def nominal_count(self) -> int:
        return self.n

    @classmethod
    def from_parameter(cls, text: str, method_id: str, where: str | None) -> "TopNSoup":
        if text.isascii() and text.isdigit() and int(text) >= 1:
            if text != str(int(text)):  # soup-05 would name other files and table columns than soup-5
                canonical = f"soup-{int(text)}"
                raise MethodIdError(where, f"write {method_id!r} as {canonical!r} (N without leading zeros)", canonical=canonical)
            return cls(int(text))
        raise MethodIdError(where, f"{method_id!r} needs a positive N, e.g. soup-5 (soup-0 would silently mean 'all')")

    def select(self, prefix: Sequence[RunInfo]) -> Selection:
        return Selection.uniform(ranked_snapshots(prefix)[: self.n], top_n=self.n)


class GreedySoup(Method):
    """Greedy: Wortsman et al.'s greedy soup over the first k runs' snapshots (a snapshot joins
    only if English dev does not drop): members picked by forward passes (jobs.averaging.greedy)."""

    family, family_label = "greedy", "Greedy"
    needs_forward_passes = True

    def select_all(self, store, spec, runs, cache) -> dict[int, Selection]:
        from jobs.averaging.greedy import greedy_selection  # model code: imported only where it runs

        return greedy_selection(store, spec, runs, cache)

    def possible_inputs(self, prefix: Sequence[RunInfo]) -> set[str]:
        return {s["ref"] for run in prefix for s in run["snapshots"]}  # any snapshot may join


class Uniform(Method):
    """The uniform average of an explicit list of models (AverageSpec refs -> output_ref)."""

    family, family_label, mode = "uniform", "Uniform", EXPLICIT

    def select(self, models: Sequence[Mapping[str, Any]]) -> Selection:
        """`models`: the listed models' manifests, each with its "ref" and "sha256"."""
        return Selection.uniform(models)


# ---- the registry: a plain dict from family to class, built from this list (its order is the
# order of the tables' columns and of the ids in error messages) ----
METHOD_TYPES: tuple[type[Method], ...] = (RunCA, LastOfRuns, BestDevOfRuns, AllOfRuns, TopNSoup, GreedySoup, Uniform)
METHODS: dict[str, type[Method]] = {cls.family: cls for cls in METHOD_TYPES}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method outside the default list (an experiment's or a test's); refused if its id is taken."""
    if cls.family in METHODS:
        raise ValueError(f"averaging method {cls.family!r} is registered already ({METHODS[cls.family].__name__})")
    METHODS[cls.family] = cls
    return cls


def unregister_method(family: str) -> None:
    """Remove a method added with `register_method` (the default ones stay)."""
    if family in {cls.family for cls in METHOD_TYPES}:
        raise ValueError(f"averaging method {family!r} is a default method; it cannot be removed")
    METHODS.pop(family, None)


def known_ids(mode: str | None = None) -> list[str]:
    """Ids for messages, e.g. ['r-last', 'r-dev', 'r-ca', 'greedy', 'soup-N'] for mode 'draws'."""
    families = [cls for cls in METHODS.values() if mode is None or cls.mode == mode]
    return [c.family for c in families if c.parameter is None] + [f"{c.family}-{c.parameter}" for c in families if c.parameter]


def get_method(method_id: str, where: str | None = "methods") -> Method:
    """The method named `method_id` (`soup-5` -> TopNSoup(5)); a MethodIdError (a SpecError
    naming `where`) for an unknown id, `soup-0` or `soup-05`."""
    if not isinstance(method_id, str):
        raise MethodIdError(where, f"expected a method id (a string), got {method_id!r}")
    cls = METHODS.get(method_id)
    if cls is not None and cls.parameter is None:
        return cls()
    for cls in METHODS.values():
        if cls.parameter is not None and method_id.startswith(cls.family + "-"):
            return cls.from_parameter(method_id[len(cls.family) + 1 :], method_id, where)
    raise MethodIdError(where, f"unknown averaging method {method_id!r}; known: {', '.join(known_ids())}", unknown=True)


def table_order(method: Method) -> tuple[int, int]:
    """Where a method's column goes among the averaged methods: registry order, then parameter."""
    return (list(METHODS).index(method.family), method.parameter_value or 0)
