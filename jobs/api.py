"""The library API of `jobs` for the orchestrator: what it may call beyond the contract modules.

The orchestrator plans and reads results through the contract modules (jobs.spec, jobs.layout,
jobs.results, jobs.store, jobs.draws, jobs.snapshots, ...). The few things it needs from the job
internals (the task's model class, the tokenizer, the data loaders) go through this module, so
that the internals can change without the orchestrator knowing (`.importlinter` forbids it to
import them directly). Each function imports the internals when called: importing this module
stays cheap, and the CLI does not load torch until it exports a model.
"""
from __future__ import annotations

from pathlib import Path

from jobs import layout
from jobs.errors import PermanentError
from jobs.snapshots import WeightsCache
from jobs.spec import DatasetRef
from jobs.store import ObjectStore


class ExportError(PermanentError):
    """A model that cannot be exported, or an output that must not be overwritten."""


def draw_inputs(store: ObjectStore, spec) -> set[str]:
    """The snapshot and run-sum refs the averages of a draw spec (an AverageSpec) read: what gc
    must keep while those averages are pending."""
    from jobs.averaging.members import draw_inputs as inputs

    return inputs(store, spec)


def count_examples(task: str, data: DatasetRef) -> int:
    """How many examples the task reads from `data` (a local file is read; a Hub set is downloaded)."""
    from jobs.data.loading import load_examples

    return len(load_examples(task, data))


def write_hf_model(store: ObjectStore, manifest: dict, task: str, base_model: str, directory: Path,
                   cache: WeightsCache | None = None) -> str:
    """Write a committed model as a Hugging Face model: config.json (the base model's config with
    the task's labels), model.safetensors (the stored tensors, sha256-verified, unchanged) and the
    tokenizer files, into `directory`. Returns the architecture, e.g. XLMRobertaForSequenceClassification."""
    import torch
    from safetensors.torch import load_file, save_file

    from jobs.common import build_model
    from jobs.models import load_tokenizer
    from jobs.tasks import get_task

    ref = manifest["ref"]
    with torch.device("meta"):  # the architecture and config only: no weights allocated
        model = build_model(get_task(task), base_model)
    cache = cache or WeightsCache(store)
    state = load_file(str(cache.path(ref, manifest)))  # sha256 verified against the manifest
    _check_fits(model, state, ref, base_model)
    architecture = type(model).__name__
    config = model.config
    config.architectures = [architecture]
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    # the stored tensors unchanged; "format: pt" is the metadata from_pretrained expects
    save_file(state, str(directory / layout.WEIGHTS), metadata={"format": "pt"})
    load_tokenizer(base_model).save_pretrained(directory)
    return architecture


def _check_fits(model, state: dict, ref: str, base_model: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ExportError(
            f"model {ref} does not fit {base_model!r}: missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )
