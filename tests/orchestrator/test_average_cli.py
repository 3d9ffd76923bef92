"""`orchestrator average` on the local backend: the flags reach the average jobs."""
from __future__ import annotations

import yaml
from click.testing import CliRunner
from safetensors import safe_open

from jobs import layout
from jobs.snapshots import WeightsCache, read_manifest

from orchestrator import plan
from orchestrator.commands.stages import average
from orchestrator.context import open_experiment

from tests.jobs.average_support import make_runs, naive_mean

CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]


def test_average_output_dtype_flag_stores_bf16_averages(tmp_path):
    bucket, config = tmp_path / "bucket", tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "task": "nli", "base_model": "tiny", "epochs": 3, "head": {"enabled": False},
        "grid": {"learning_rates": [1e-5, 2e-5, 3e-5], "batch_sizes": [16, 32], "seeds": [1]},
        "draws": {"count": 1, "runs_per_draw": 3, "methods": ["r-ca"]},
    }))
    exp = open_experiment(str(bucket), "dtype", str(config), {})
    runs, states = make_runs(exp.store, tmp_path / "src", CONFIGS, snapshots=2)
    args = ["--bucket", str(bucket), "--experiment", "dtype", "--config", str(config), "--backend", "local"]
    result = CliRunner().invoke(average, args + ["--output-dtype", "bf16"])
    assert result.exit_code == 0, result.output

    finished = plan.finished_runs(exp.config, exp.store, exp.uri, None)
    refs = plan.average_refs(exp.config, finished, plan.make_draws(exp.config, finished))
    assert len(refs) == 3 + 3  # each run's CA, and R-CA for k = 1..3
    cache = WeightsCache(exp.store, tmp_path / "cache")
    for ref in refs:
        manifest = read_manifest(exp.store, ref)
        assert manifest["dtype"] == "bf16"
        members = [c["ref"] for c in manifest["constituents"]]
        expected = naive_mean([states[m] for m in members])
        with safe_open(str(cache.path(ref)), "pt") as f:
            for name in f.keys():
                value = f.get_tensor(name)
                if expected[name].is_floating_point():
                    assert value.dtype.is_floating_point and value.element_size() == 2, name  # stored in bf16
                    assert (value.double() - expected[name]).abs().max() <= 1e-2 * (1 + expected[name].abs().max()), name
    assert layout.run_average_ref(runs[0].run_key) in refs

    bad = CliRunner().invoke(average, args + ["--output-dtype", "fp8"])
    assert bad.exit_code != 0 and "fp8" in bad.output


def test_fused_evaluation_plans_gpu_average_jobs_that_carry_the_evaluate_settings():
    import dataclasses

    from orchestrator import k8s_render

    from tests.orchestrator.k8s.k8s_fixtures import config
    from jobs.draws import RunInfo

    cfg = config("nli")
    cfg = dataclasses.replace(cfg, draws=dataclasses.replace(cfg.draws, fused_evaluate=True, keep_averages=False, runs_per_draw=2, count=1))
    runs = [RunInfo(f"{i:016x}", 1e-5 * (i + 1), 16, 1) for i in range(3)]
    requests = plan.average_requests(cfg, "s3://bucket/exp", runs, plan.make_draws(cfg, runs))
    assert [r.stage for r in requests] == ["average-gpu", "average-gpu"]
    targets = tuple(ref for t in cfg.data.targets for ref in t.refs())
    for r in requests:
        assert r.spec.evaluate.targets == targets and r.spec.evaluate.source_dev == cfg.data.dev
        assert r.spec.keep_averages is False
    settings = k8s_render.ClusterSettings(image_prefix="ghcr.io/acme")
    job = k8s_render.render_job(requests[1], "nli-test", settings)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("ghcr.io/acme/xlt-evaluate:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert k8s_render.plan_cost(requests, settings, cfg.base_model).snapshot_bytes == 0  # nothing stored
    # plain averaging stays on CPUs in the average image
    plain = plan.average_requests(dataclasses.replace(cfg, draws=dataclasses.replace(cfg.draws, fused_evaluate=False, keep_averages=True)),
                                  "s3://bucket/exp", runs, plan.make_draws(cfg, runs))
    assert [r.stage for r in plain] == ["average", "average"] and all(r.spec.evaluate is None for r in plain)


def test_drop_averages_without_fused_evaluation_is_refused(tmp_path):
    result = CliRunner().invoke(average, ["--bucket", f"file://{tmp_path}/b", "--base-model", "tiny", "--drop-averages"])
    assert result.exit_code != 0 and "--drop-averages needs --fused-evaluate" in result.output
