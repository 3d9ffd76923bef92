"""Progress lines (jobs/progress.py): one documented format, printed every XLT_PROGRESS_SECONDS
when no tqdm bar shows, and the latest line of a running job visible to `orchestrator status`
through the store (logs/<job>.progress), gone once the job ends."""
from __future__ import annotations

import logging
import time

from jobs import layout
from jobs.evaluate import run_evaluate
from jobs.progress import Progress, format_duration, interval_seconds, parse_line, running_jobs
from jobs.spec import DatasetRef, EvaluateSpec, TrainSpec, spec_to_json
from jobs.store import open_store
from jobs.train import committed_snapshots
from orchestrator.commands.status import progress_lines
from tests.fault_support import job_env, release, start_job, wait_paused


def test_a_line_is_due_every_interval_in_the_documented_format(monkeypatch):
    now = [100.0]
    line = Progress("train", 9000, "step", interval=60, clock=lambda: now[0], enabled=True)
    assert line.update(10, "loss 0.5000") is None  # the first line comes one interval after the start
    now[0] = 159.9
    assert not line.due() and line.update(1000, "loss 0.5000") is None
    now[0] = 160.0
    text = line.update(1200, "loss 0.4123", "38.2 ex/s")
    assert text == "progress train step 1200/9000 (13%) loss 0.4123 38.2 ex/s ETA 6m30s"  # 7800 steps at 20 steps/s
    assert line.update(1201, "loss 0.4") is None  # next one at 220 s
    parsed = parse_line(f"2026-12-01 10:00:00,000 INFO {text}")  # as it appears in a job's log
    assert (parsed["kind"], parsed["unit"], parsed["done"], parsed["total"], parsed["percent"], parsed["eta"]) == \
        ("train", "step", 1200, 9000, 13, "6m30s")
    assert parsed["fields"] == "loss 0.4123 38.2 ex/s" and parsed["line"] == text

    resumed = Progress("evaluate", 10, "models", interval=1, clock=lambda: now[0], enabled=True, initial=5)
    now[0] += 1
    assert resumed.update(5, "sets 50/100", fraction=0.5) == "progress evaluate models 5/10 (50%) sets 50/100 ETA ?"
    now[0] += 1  # the resumed job's own rate: 1 model in 2 s, 4 left
    assert resumed.update(6, "sets 60/100", fraction=0.6).endswith("(60%) sets 60/100 ETA 8s")
    assert [format_duration(s) for s in (0, 42, 310, 3720, 90000)] == ["0s", "42s", "5m10s", "1h02m", "25h00m"]
    assert parse_line("INFO run abc step 3/9: English dev acc 0.5") is None

    monkeypatch.setenv("XLT_PROGRESS_SECONDS", "0")
    assert not Progress("train", 9, "step").enabled  # 0: no lines
    monkeypatch.setenv("XLT_PROGRESS_SECONDS", "soon")
    assert interval_seconds() == 60.0  # the default, with a warning
    monkeypatch.setenv("XLT_PROGRESS_SECONDS", "5")
    monkeypatch.setenv("XLT_PROGRESS", "1")  # a tqdm bar shows: no lines
    assert not Progress("train", 9, "step").enabled


def _train_spec(uri: str) -> TrainSpec:
    return TrainSpec(
        experiment_uri=uri, task="nli", base_model="tiny",
        train_data=DatasetRef("synthetic-nli", "en", "train", limit=48),
        dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=16),
        learning_rate=2e-3, batch_size=16, seed=5, epochs=3, snapshot_every="1 epoch",
        max_length=64, eval_batch_size=32, num_threads=1,
    )  # 9 steps


def test_a_running_jobs_last_line_is_in_its_log_and_in_status_and_gone_when_it_ends(tmp_path, monkeypatch, caplog):
    uri = f"file://{tmp_path}/store"
    spec = _train_spec(uri)
    env = job_env(tmp_path, {"JOB_NAME": "train-nli-progress", "XLT_PROGRESS_SECONDS": "0.001", "XLT_PROGRESS": "0",
                             "XLT_FAILPOINTS": "train.step@7"})
    text = spec_to_json(spec)
    proc = start_job("train", text, env)
    proc.stdin.write(text)
    proc.stdin.close()
    wait_paused(env, "train.step", proc)
    store = open_store(uri)
    key = layout.progress_key("train-nli-progress")
    deadline = time.time() + 30
    while not (store.exists(key) and running_jobs(store) and running_jobs(store)[0]["parsed"]["done"] == 6):
        assert time.time() < deadline, "no progress record for step 6 in the store"
        time.sleep(0.05)
    [job] = running_jobs(store)
    assert job["job"] == "train-nli-progress" and job["kind"] == "train" and job["age"] < 30
    assert (job["parsed"]["unit"], job["parsed"]["total"]) == ("step", 9)
    [shown] = progress_lines(store)  # what `orchestrator status` prints for it
    assert shown.startswith("train-nli-progress  ") and " ago  train step 6/9 (66%) loss " in shown
    release(env, "train.step")
    proc.wait(timeout=180)  # its few remaining log lines fit in the pipe
    err = proc.stderr.read()
    assert proc.returncode == 0, err[-2000:]
    lines = [parse_line(l) for l in err.splitlines() if " progress " in l]
    assert [p["done"] for p in lines] == list(range(1, 10)) and all(p["kind"] == "train" for p in lines)
    assert all(float(p["fields"].split()[1]) > 0 and p["fields"].endswith("ex/s") for p in lines)
    assert not store.exists(key) and progress_lines(store) == []  # the job ended: nothing running

    # the evaluate job: models and sets done, the same format
    refs = tuple(m["ref"] for m in committed_snapshots(store, spec.run_key))
    monkeypatch.setenv("XLT_PROGRESS_SECONDS", "0.001")
    caplog.set_level(logging.INFO, logger="jobs")
    run_evaluate(EvaluateSpec(experiment_uri=uri, task="nli", base_model="tiny", refs=refs, source_dev=spec.dev_data,
                              targets=(DatasetRef("synthetic-nli", "xx-far", "validation", limit=16),), max_length=64, batch_size=32))
    parsed = [parse_line(r.getMessage()) for r in caplog.records if r.getMessage().startswith("progress ")]
    assert parsed and all(p["kind"] == "evaluate" and p["unit"] == "models" and p["total"] == 3 for p in parsed)
    assert parsed[-1]["fields"] == "sets 6/6" and parsed[-1]["percent"] == 100
    assert not [k for k in store.list_keys("logs/") if k.endswith(layout.PROGRESS_SUFFIX)]

    # the average job: bytes read during the pass (which from S3 follows the download), then
    # averages delivered; percent and ETA of the whole job, rising
    from jobs.average import run_average
    from jobs.spec import AverageSpec

    caplog.clear()
    run_average(AverageSpec(experiment_uri=uri, task="nli", methods=("uniform",), refs=refs, output_ref="averages/progress/k03"))
    parsed = [parse_line(r.getMessage()) for r in caplog.records if r.getMessage().startswith("progress ")]
    reading = [p for p in parsed if " of " in p["fields"]]
    assert reading and all(p["kind"] == "average" and p["unit"] == "averages" and p["done"] == 0 for p in reading)
    total = reading[0]["fields"].split(" of ")[1]
    assert all(p["fields"].startswith("read ") and p["fields"].endswith(" of " + total) for p in reading)
    [over] = [p for p in parsed if p["fields"] == "read " + total]  # the pass is over: its share of the job
    assert over["percent"] == 90 and over["done"] == 0
    assert parsed[-1]["done"] == parsed[-1]["total"] == 1 and parsed[-1]["percent"] == 100
    percents = [p["percent"] for p in parsed]
    assert percents == sorted(percents) and percents[0] < 90
    assert not [k for k in store.list_keys("logs/") if k.endswith(layout.PROGRESS_SUFFIX)]
