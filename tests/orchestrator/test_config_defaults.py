"""The paper's settings are the defaults; every config value is checked when the config loads.

Defaults from the paper's code (trident-xtreme configs/experiment/ofa-*.yaml): 10 epochs with a
snapshot per epoch for NLI and NER, 40 epochs with a snapshot every 4 for TyDiQA, "16-mixed"
precision, NER labels on every sub-token, whole QA questions. They are written into every spec,
and the same config gives the same run keys on every backend.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from jobs.spec import SpecError
from orchestrator import plan
from orchestrator.config import load_config

REPO_CONFIGS = "configs"


@pytest.mark.parametrize("task, epochs, every, option", [
    ("nli", 10, "1 epochs", {}),
    ("ner", 10, "1 epochs", {"ner_labels": "all-subtokens"}),
    ("tydiqa", 40, "4 epochs", {"qa_questions": "full"}),
])
def test_paper_defaults_are_written_into_every_spec(task, epochs, every, option):
    cfg = load_config(None, {"task": task})
    spec = plan.head_spec(cfg, "file:///x/exp")
    assert (spec.epochs, spec.snapshot_every, spec.precision) == (epochs, every, "fp16")
    assert {k: getattr(spec, k) for k in option} == option
    other = {"ner_labels", "qa_questions"} - set(option)  # another task's option never enters the key
    assert all(getattr(spec, k) is None for k in other)
    assert spec.snapshot_count() == 10


def test_tydiqa_with_its_own_epochs_snapshots_every_epoch():
    cfg = load_config(None, {"task": "tydiqa", "epochs": 6})
    assert (cfg.epochs, cfg.snapshot_every) == (6, "1 epochs")


@pytest.mark.parametrize("name", ["tiny-nli", "tiny-ner", "tiny-tydiqa", "realdata-nli", "realdata-ner", "realdata-tydiqa"])
def test_cpu_configs_say_fp32(name):
    cfg = load_config(f"{REPO_CONFIGS}/{name}.yaml", {})
    assert cfg.precision == "fp32" and cfg.snapshot_every == "1 epochs"


def test_k8s_renders_the_papers_tydiqa_head_with_the_local_run_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "render", "head", "--task", "tydiqa", "--bucket", f"file://{tmp_path}/b",
         "--image-prefix", "registry.example/xlt"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [job] = [d for d in yaml.safe_load_all(proc.stdout) if d and d.get("kind") == "Job"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    spec = json.loads(env["JOB_SPEC"])
    assert (spec["epochs"], spec["snapshot_every"], spec["precision"], spec["qa_questions"]) == (40, "4 epochs", "fp16", "full")
    local = plan.head_spec(load_config(None, {"task": "tydiqa"}), f"file://{tmp_path}/b/tydiqa-xlm-roberta-large")
    from jobs.spec import spec_from_dict

    assert spec_from_dict("train", spec).run_key == local.run_key


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


BAD = [
    ("grid: {learning_rates: [.inf]}", "grid.learning_rates[0]: must be a finite number > 0"),
    ("grid: {learning_rates: [.nan]}", "grid.learning_rates[0]: must be a finite number > 0"),
    ("grid: {learning_rates: [-1.0e-5]}", "grid.learning_rates[0]: must be a finite number > 0"),
    ("grid: {batch_sizes: [0]}", "grid.batch_sizes[0]: must be >= 1"),
    ("head: {learning_rate: 0}", "head.learning_rate: must be a finite number > 0"),
    ("epochs: 0", "epochs: must be >= 1"),
    ("warmup_ratio: 1.5", "warmup_ratio: must be in [0, 1)"),
    ("precision: fp8", "precision: must be one of fp16, bf16, fp32"),
    ("ner_labels: every-token", "ner_labels: must be one of"),
    ("qa_questions: short", "qa_questions: must be one of"),
    ("snapshot_every: 4", "snapshot_every: expected a string"),
    ("snapshot_every: 4 weeks", "snapshot_every: expected 'N epochs' or 'N steps'"),
    ("snapshot_every: 1 epoch\nsnapshots_per_epoch: 2", "either snapshot_every or snapshots_per_epoch"),
    ("epochs: 10\nsnapshot_every: 3 epochs", "does not divide the run of 10 epochs"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_values_are_refused_at_load(tmp_path, text, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(_write(tmp_path, "task: nli\nbase_model: tiny\n" + text), {})


def test_a_schedule_the_local_data_cannot_give_is_refused_at_load(tmp_path, realdata_dir):
    """snapshots_per_epoch: 500 with 3,000 PAN-X sentences at batch 32 (94 steps per epoch)."""
    cfg = yaml.safe_load(open("configs/realdata-ner.yaml", encoding="utf-8"))
    cfg["data"]["root"] = str(realdata_dir)
    cfg.pop("snapshot_every")
    cfg["snapshots_per_epoch"] = 500
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SpecError, match=r"500 snapshots per epoch but an epoch has only 94 optimizer step\(s\).*3000 training examples at batch size 32"):
        load_config(str(path), {})
    cfg["snapshots_per_epoch"] = None
    cfg["snapshot_every"] = "50 steps"  # 2 epochs x 94 steps = 188: not a multiple of 50
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SpecError, match="does not divide the run of 188 steps"):
        load_config(str(path), {})


def test_draw_averages_can_be_scored_on_test_splits_only():
    cfg = load_config(None, {"task": "ner", "base_model": "tiny", "draws.fused_evaluate": True, "draws.target_splits": ["test"]})
    from jobs.draws import Draw, RunInfo

    runs = [RunInfo(run_key=f"r{i}", learning_rate=1e-5, batch_size=32, seed=i) for i in range(2)]
    draw = Draw(seed=0, k=2, run_keys=("r0", "r1"))
    ca, draw_job = plan.average_requests(cfg, "file:///x/exp", runs, [draw])
    assert {r.split for r in ca.spec.evaluate.targets} == {"validation", "test"}  # CA models: every split
    assert {r.split for r in draw_job.spec.evaluate.targets} == {"test"}
    assert len(draw_job.spec.evaluate.targets) == len(ca.spec.evaluate.targets) // 2


@pytest.mark.parametrize("draws, message", [
    ({"draws.target_splits": ["test"]}, "applies to the fused evaluation only"),
    ({"draws.fused_evaluate": True, "draws.target_splits": ["dev"]}, "a non-empty list of validation, test"),
])
def test_bad_draw_target_splits_are_refused(draws, message):
    with pytest.raises(SpecError, match=message):
        load_config(None, {"task": "ner", "base_model": "tiny", **draws})


def test_the_config_declares_every_training_setting_the_planner_copies_into_specs():
    import dataclasses

    from jobs.spec import TRAINING_SETTINGS, TrainSpec
    from orchestrator.config import ExperimentConfig

    config_fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    spec_fields = {f.name for f in dataclasses.fields(TrainSpec)}
    assert set(TRAINING_SETTINGS) <= config_fields & spec_fields
    cfg = load_config(None, {"task": "ner", "warmup_ratio": 0.2, "max_grad_norm": 0.5, "eval_batch_size": 8})
    spec = plan.head_spec(cfg, "file:///x/exp")
    assert {name: getattr(spec, name) for name in TRAINING_SETTINGS} == {name: getattr(cfg, name) for name in TRAINING_SETTINGS}
