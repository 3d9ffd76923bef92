"""Fixtures of the image tests: a tiny committed store to average, and opt-in handling of `images` tests.

Tests marked `images` build containers: they are deselected unless XLT_IMAGE_SMOKE=1 (what
`make image-smoke` sets) or `-m` names the marker.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("XLT_IMAGE_SMOKE") == "1" or "images" in (config.getoption("markexpr") or ""):
        return
    keep = [i for i in items if i.get_closest_marker("images") is None]
    dropped = [i for i in items if i.get_closest_marker("images") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def make_tiny_store(root: Path, runs: int = 2, snapshots: int = 3) -> dict[str, dict]:
    """Finished runs as the train job leaves them: snapshots plus a committed fp32 run-sum each.

    Returns run key -> {"sum": {tensor name: fp32 sum}, "count": snapshots}; a tiny "model" of a
    matrix, a bias, a bf16 tensor and an integer buffer (integer buffers are copied, not averaged).
    """
    import torch

    from jobs import layout
    from jobs.snapshots import commit_model, save_state_dict
    from jobs.spec import short_hash
    from jobs.store import open_store

    store = open_store(root.as_uri())
    made = {}
    for r in range(runs):
        run_key = short_hash({"tiny-run": r})
        spec = {"task": "nli", "base_model": "tiny", "learning_rate": 1e-5 * (r + 1), "seed": r}
        total: dict[str, torch.Tensor] = {}
        listed = []
        for s in range(snapshots):
            g = torch.Generator().manual_seed(100 * r + s)
            state = {
                "encoder.weight": torch.randn(8, 4, generator=g),
                "encoder.bias": torch.randn(8, generator=g),
                "encoder.half": torch.randn(3, 2, generator=g).to(torch.bfloat16),
                "position_ids": torch.arange(6, dtype=torch.int64),
            }
            for name, t in state.items():
                total[name] = t.clone() if not t.is_floating_point() else total.get(name, 0) + t.float()
            step = (s + 1) * 10
            path = root / f".tmp-{r}-{s}.safetensors"
            save_state_dict(state, path)
            ref = layout.snapshot_ref(run_key, step)
            manifest = commit_model(store, ref, path, {"kind": "snapshot", "run_key": run_key, "step": step, "spec": spec})
            path.unlink()
            listed.append({"ref": ref, "sha256": manifest["sha256"], "step": step, "dev_score": 0.5 + 0.01 * s})
        path = root / f".tmp-{r}-sum.safetensors"
        save_state_dict(total, path)
        commit_model(
            store, layout.run_sum_ref(run_key), path,
            {"kind": "run-sum", "run_key": run_key, "snapshots": listed, "count": snapshots, "head_sha256": None, "spec": spec},
        )
        path.unlink()
        made[run_key] = {"sum": total, "count": snapshots}
    return made


def check_run_averages(root: Path, made: dict[str, dict]) -> None:
    """Each run's committed CA model is its run-sum divided by its snapshot count."""
    import torch
    from safetensors.torch import load_file

    from jobs import layout

    for run_key, info in made.items():
        ref = layout.run_average_ref(run_key)
        assert (root / layout.manifest_key(ref)).exists(), f"no committed CA model at {ref}"
        got = load_file(str(root / layout.weights_key(ref)))
        assert set(got) == set(info["sum"])
        for name, total in info["sum"].items():
            expected = total if not total.is_floating_point() else total / info["count"]
            assert torch.allclose(got[name].float(), expected.float(), atol=1e-6), name


@pytest.fixture
def tiny_store(tmp_path: Path):
    root = tmp_path / "store"
    root.mkdir()
    return root, make_tiny_store(root)
