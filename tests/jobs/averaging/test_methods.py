"""The averaging-method registry: ids, labels, modes, the one soup-N parser, members per method."""
from __future__ import annotations

import subprocess
import sys

import pytest

from jobs import layout
from jobs.averaging.errors import AverageError
from jobs.averaging.methods import (
    METHOD_TYPES, Method, MethodIdError, Selection, get_method, known_ids, register_method, table_order, unregister_method,
)
from jobs.spec import SpecError

# PROTOCOL.md "One name for each thing": id -> table label, and the job mode that makes it
PROTOCOL = {
    "ca": ("CA", "run-averages"), "r-last": ("R-L", "draws"), "r-dev": ("R-DEV", "draws"), "r-ca": ("R-CA", "draws"),
    "soup-5": ("Soup-5", "draws"), "soup-12": ("Soup-12", "draws"), "greedy": ("Greedy", "draws"), "uniform": ("Uniform", "explicit"),
}  # fmt: skip


@pytest.mark.parametrize("method_id", PROTOCOL)
def test_every_protocol_id_parses_to_its_label_and_mode(method_id):
    method = get_method(method_id)
    assert (method.id, (method.label, method.mode)) == (method_id, PROTOCOL[method_id])
    assert method.needs_forward_passes == (method_id == "greedy")  # only greedy soup scores models


@pytest.mark.parametrize("bad, message", [
    ("soup-05", "write 'soup-05' as 'soup-5' (N without leading zeros)"),
    ("soup-0", "'soup-0' needs a positive N"),
    ("soup-x", "'soup-x' needs a positive N"),
    ("soup-", "'soup-' needs a positive N"),
    ("soup", "unknown averaging method 'soup'"),
    ("r-best", "unknown averaging method 'r-best'; known: ca, r-last, r-dev, r-ca, greedy, uniform, soup-N"),
])  # fmt: skip
def test_bad_ids_are_one_spec_error_naming_the_field(bad, message):
    with pytest.raises(SpecError) as error:
        get_method(bad, "draws.methods[1]")
    assert str(error.value).startswith("draws.methods[1]: ") and message in str(error.value)
    assert error.value.canonical == ("soup-5" if bad == "soup-05" else None)


def test_soup_n_knows_its_n_and_where_its_prefixes_fall_short():
    soup = get_method("soup-5")
    assert (soup.parameter_value, soup.nominal_count) == (5, 5)
    assert soup.short_prefixes([2, 2, 3]) == [1, 2] and not soup.too_few_snapshots([2, 2, 3])
    assert soup.too_few_snapshots([2, 2]) and get_method("r-ca").nominal_count is None


def test_table_order_is_registry_order_then_n():
    ids = ["greedy", "soup-10", "r-ca", "soup-2", "r-dev", "r-last"]
    assert sorted(ids, key=lambda m: table_order(get_method(m))) == ["r-last", "r-dev", "r-ca", "soup-2", "soup-10", "greedy"]
    assert known_ids("draws") == ["r-last", "r-dev", "r-ca", "greedy", "soup-N"]


def _run(key: str, snapshots: list[tuple[int, float]]) -> dict:
    return {"run_key": key, "count": len(snapshots),
            "snapshots": [{"ref": f"runs/{key}/snapshots/{step:08d}", "sha256": "0" * 64, "step": step, "dev_score": dev} for step, dev in snapshots]}


RUNS = [_run("a" * 16, [(20, 0.5), (10, 0.7), (30, 0.7)]), _run("b" * 16, [(10, 0.9), (20, 0.1)])]


def _refs(selection: Selection) -> list[str]:
    return [s["ref"] for s in selection.members]


def test_members_of_every_draw_method():
    a, b = (r["snapshots"] for r in RUNS)
    last = get_method("r-last").select(RUNS)
    assert _refs(last) == [a[2]["ref"], b[1]["ref"]] and last.divisor == 2.0
    assert _refs(get_method("r-dev").select(RUNS)) == [a[1]["ref"], b[0]["ref"]]  # a tie: the earliest step
    soup = get_method("soup-3").select(RUNS)  # by dev score; ties in draw order, then step
    assert _refs(soup) == [b[0]["ref"], a[1]["ref"], a[2]["ref"]] and soup.manifest == {"top_n": 3}
    rca = get_method("r-ca").select(RUNS)  # from the run-sums: one term per run over every snapshot
    assert rca.terms == tuple((layout.run_sum_ref(r["run_key"]), 1.0) for r in RUNS) and rca.divisor == 5.0
    assert len(rca.members) == 5
    ca = get_method("ca").select(RUNS[:1])
    assert ca.terms == ((layout.run_sum_ref("a" * 16), 1.0),) and ca.divisor == 3.0
    greedy = get_method("greedy")
    assert greedy.possible_inputs(RUNS) == {s["ref"] for r in RUNS for s in r["snapshots"]}


def test_weighted_selection_sums_weights_and_refuses_weights_that_cannot_average():
    members = RUNS[0]["snapshots"][:2]
    weighted = Selection.weighted(members, [0.25, 0.75])
    assert weighted.terms == ((members[0]["ref"], 0.25), (members[1]["ref"], 0.75)) and weighted.divisor == 1.0
    for bad in ([0.0, 0.0], [-1.0, 2.0], [float("nan"), 1.0], [1.0]):
        with pytest.raises(AverageError, match="need one finite weight >= 0 each"):
            Selection.weighted(members, bad)


def test_registering_refuses_a_taken_id_and_default_methods_stay():
    class Taken(Method):
        family, family_label = "r-ca", "X"

    with pytest.raises(ValueError, match="'r-ca' is registered already"):
        register_method(Taken)
    with pytest.raises(ValueError, match="is a default method"):
        unregister_method("r-ca")
    assert {cls.family for cls in METHOD_TYPES} == {"ca", "r-last", "r-dev", "r-ca", "soup", "greedy", "uniform"}
    with pytest.raises(MethodIdError):
        get_method("r-x")


def test_the_registry_imports_neither_torch_nor_transformers():
    code = "import sys, jobs.averaging.methods, jobs.spec; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
