"""Helpers shared by the job bodies: device, threads, progress, model loading from a ref."""
from __future__ import annotations

import contextlib
import logging
import os
import sys

import torch

from jobs import layout
from jobs.models import load_config, resolve_base_model
from jobs.snapshots import WeightsCache, read_manifest

log = logging.getLogger("jobs")


def setup_torch(num_threads: int | None) -> torch.device:
    num_threads = num_threads or int(os.environ.get("XLT_NUM_THREADS", "0"))
    if num_threads:
        torch.set_num_threads(num_threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress(iterable=None, **kwargs):
    """tqdm on an interactive terminal (or XLT_PROGRESS=1); plain iteration in pods and CI logs."""
    from tqdm.auto import tqdm

    show = os.environ.get("XLT_PROGRESS", "1" if sys.stderr.isatty() else "0") == "1"
    return tqdm(iterable, disable=not show, file=sys.stderr, dynamic_ncols=True, **kwargs)


def build_model(task, base_model: str, init: bool = True, device: torch.device | str | None = None):
    """The task's model class built from the base model's config (no weights read), its
    parameters allocated on `device` (default the CPU).

    `init=False` skips the random initialisation (the parameters hold arbitrary values until a
    state dict is loaded): for a model whose every weight is loaded next, it saves seconds per
    model (13 s of multilingual-e5-small's 96 M embedding rows on a busy core) and draws nothing
    from the global RNG. A random initialisation on a GPU draws other values than on the CPU."""
    config = load_config(base_model, **task.model_kwargs())
    cls = task.model_class()
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if not init:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                return cls.from_config(config)
        torch.manual_seed(0)
        return cls.from_config(config)


def load_pretrained(task, base_model: str):
    """The task model with pre-trained encoder weights; a new head is initialised with seed 0,
    so every run of a task starts from the same head."""
    cls = task.model_class()
    torch.manual_seed(0)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(resolve_base_model(base_model), **task.model_kwargs())
    except (OSError, ValueError) as e:
        from jobs.errors import PermanentError

        raise PermanentError(f"cannot load base model {base_model!r}: {str(e).splitlines()[0]}") from None


def load_model_from_ref(task, base_model: str, store, ref: str, cache: WeightsCache, device: torch.device | str | None = None):
    """Build the architecture from the config and load a committed model's weights into it."""
    manifest = read_manifest(store, ref)
    return load_model_from_file(task, base_model, cache.path(ref, manifest), ref, device), manifest


def load_model_from_file(task, base_model: str, path, ref: str, device: torch.device | str | None = None):
    """Build the architecture from the config and load the weights of a local safetensors file
    (model `ref`, for messages) into it, on `device` (default the CPU): the model is built
    there and the file read tensor by tensor into that device's memory (on a GPU no host copy
    of the whole model, no second transfer by `model.to`)."""
    from safetensors.torch import load_file

    model = build_model(task, base_model, init=False, device=device)  # every weight comes from the file (checked below)
    state = load_file(str(path), device=str(torch.device(device or "cpu")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("position_ids")]:
        from jobs.errors import PermanentError

        raise PermanentError(
            f"model {ref} does not fit {base_model!r} for task {task.name}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def ref_kind(ref: str) -> str:
    if layout.parse_snapshot_ref(ref):
        return "snapshot"
    if ref.endswith("/ca") and ref.startswith("runs/"):
        return "run-average"
    return "draw-average"
