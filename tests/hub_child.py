"""Runs in a subprocess for the Hub-loading tests (tests/jobs/data/test_hub_loading.py):
huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT at import, and the test process has them set
for offline tests, so the loads through the fixture server happen here, in a fresh interpreter
whose environment the test chose.

    python -m tests.hub_child SPEC.json OUT.json

SPEC: {"loads": [[dataset, language, split], ...],   jobs.data.loading.load_examples for each
       "datasets_hub_path": bool,                      also datasets.load_dataset(<hub id>, ...) itself
       "errors": bool,                                  the one-line failures (no revision, no conversion)
       "model": "owner/name" | null}                    jobs.models.load_tokenizer + jobs.common.load_pretrained
OUT: one JSON object with a result per item; exceptions are recorded, never raised.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback


def _error(e: BaseException) -> dict:
    return {"ok": False, "type": type(e).__name__, "error": str(e), "trace": traceback.format_exc()[-3000:]}


def run_loads(loads: list) -> dict:
    from jobs.data import registry
    from jobs.data.loading import load_examples
    from jobs.spec import DatasetRef

    out = {}
    for name, language, split in loads:
        info = registry.get(name)
        try:
            examples = load_examples(info.task, DatasetRef(name, language, split))
            out[f"{name}/{language}/{split}"] = {"ok": True, "examples": examples}
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out[f"{name}/{language}/{split}"] = _error(e)
    return out


def run_datasets_hub_path(loads: list) -> dict:
    """datasets' own Hub loader on the pinned revision: the same rows as load_hub_rows?"""
    import datasets

    from jobs.data import registry

    out = {}
    for name, language, split in loads:
        info = registry.get(name)
        config, hub_split, pattern = registry.hub_split_files(info, language, split)
        try:
            if info.hub_files == registry.EXPORT_FILES:  # no README: select the config by its files
                data = datasets.load_dataset(info.hub_id, data_files={hub_split: pattern}, split=hub_split,
                                             revision=info.hub_revision)
            else:  # README configs
                data = datasets.load_dataset(info.hub_id, config, split=hub_split, revision=info.hub_revision)
            out[f"{name}/{language}/{split}"] = {"ok": True, "rows": data.to_list(), "features": str(data.features)}
        except BaseException as e:  # noqa: BLE001
            out[f"{name}/{language}/{split}"] = _error(e)
    return out


def run_errors() -> dict:
    from jobs.data import registry

    cases = {
        "no_revision": dataclasses.replace(registry.get("masakhaner"), hub_revision=None),
        "no_conversion": dataclasses.replace(registry.get("masakhaner"), name="canadian-invertebrates",
                                             hub_id="bioscan-ml/CanadianInvertebrates-ML"),
        "script_main": dataclasses.replace(registry.get("masakhaner"), hub_revision="main"),
    }
    out = {}
    for key, info in cases.items():
        try:
            registry.load_hub_rows(info, "yor", "test")
            out[key] = {"ok": True}
        except BaseException as e:  # noqa: BLE001
            out[key] = _error(e)
    return out


def run_model(model: str) -> dict:
    from jobs.common import load_pretrained
    from jobs.models import load_tokenizer
    from jobs.tasks import get_task

    try:
        tokenizer = load_tokenizer(model)
        ids = tokenizer("Habari ya asubuhi")["input_ids"]
        network = load_pretrained(get_task("nli"), model)
        return {"ok": True, "vocab": len(tokenizer), "ids": ids, "class": type(network).__name__,
                "hidden": network.config.hidden_size, "layers": network.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in network.parameters())}
    except BaseException as e:  # noqa: BLE001
        return _error(e)


def main(argv: list[str]) -> int:
    spec = json.loads(open(argv[0], encoding="utf-8").read())
    result: dict = {"env": {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME")}}
    loads = spec.get("loads", [])
    seconds = result["seconds"] = {}
    phases = [("loads", bool(loads), lambda: run_loads(loads)),
              ("datasets_hub_path", spec.get("datasets_hub_path"), lambda: run_datasets_hub_path(loads)),
              ("errors", spec.get("errors"), run_errors),
              ("model", spec.get("model"), lambda: run_model(spec["model"]))]
    for key, wanted, run in phases:
        if wanted:
            start = time.perf_counter()
            result[key] = run()
            seconds[key] = round(time.perf_counter() - start, 2)
    with open(argv[1], "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
