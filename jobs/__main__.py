"""The one job entry point: `python -m jobs <train|evaluate|average> --spec PATH|-`.

The spec may also come from the JOB_SPEC environment variable (how Kubernetes Jobs pass it).
Exit codes: 0 done, 3 permanent error (retrying cannot help), 75 temporary error (retry).
Every error is one line (the traceback only with --debug, or for a bug). The job's log is
copied into the store (logs/<job name>.log) when it ends. At start, scratch folders left by
dead jobs on this machine are removed (jobs/scratch.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from jobs.errors import EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, JobError, MalformedFile, SpecError, disk_full_in_chain
from jobs.progress import job_name
from jobs.spec import spec_from_json

log = logging.getLogger("jobs")


def _read_spec_text(arg: str | None) -> str:
    """The spec's text, checked to be UTF-8 JSON with finite numbers only (no NaN, Infinity or
    1e999); errors name where the spec came from."""
    if arg == "-":
        where, data = "spec from stdin", sys.stdin.buffer.read()
    elif arg:
        where = f"spec file {arg}"
        try:
            data = Path(arg).read_bytes()
        except OSError as e:
            raise SpecError(f"cannot read spec file {arg}: {e.strerror}") from None
    else:
        text = os.environ.get("JOB_SPEC")
        if not text:
            raise SpecError("no spec: pass --spec PATH (or - for stdin) or set JOB_SPEC")
        where, data = "spec in JOB_SPEC", os.environb.get(b"JOB_SPEC", b"") if os.name != "nt" else text.encode()
    from jobs.store import decode_json

    try:
        decode_json(data, where, constants=False)
    except MalformedFile as e:
        raise SpecError(str(e)) from None
    return data.decode("utf-8")


def _run(kind: str, spec) -> None:
    if kind == "train":
        from jobs.train import run_train

        run_train(spec)
    elif kind == "evaluate":
        from jobs.evaluate import run_evaluate

        run_evaluate(spec)
    else:
        from jobs.average import run_average

        run_average(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("train", "evaluate", "average"))
    parser.add_argument("--spec", help="spec JSON file, or - for stdin (default: $JOB_SPEC)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from jobs import scratch

    log_file = None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        log_file = scratch.new_file("job", ".log")
        handlers.append(logging.FileHandler(log_file))
    except OSError:
        pass  # a full temp disk: log to stderr only; the job reports the disk below if it needs it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    spec = None
    code = EXIT_OK
    try:
        scratch.sweep()
        spec = spec_from_json(args.kind, _read_spec_text(args.spec))
        log.info("%s job starting: %s", args.kind, getattr(spec, "run_key", ""))
        _run(args.kind, spec)
        log.info("%s job done", args.kind)
    except JobError as e:
        code = e.exit_code
        log.error("%s", e)
        if args.debug:
            log.exception("traceback")
    except Exception as e:
        full = disk_full_in_chain(e) or _disk_full_message(e)
        if full is not None:  # a full scratch or store disk, whoever raised it
            code = EXIT_TEMPORARY
            where = getattr(full, "filename", None) or f"the job's scratch under {scratch.root()}"
            log.error("no space left on device: %s (free space or point TMPDIR elsewhere, then retry)", where)
        elif isinstance(e, (OSError, ConnectionError, TimeoutError)):
            code = EXIT_TEMPORARY
            log.error("temporary failure: %s", e)
        else:  # a bug: permanent, and the traceback is what a developer needs
            code = EXIT_PERMANENT
            log.exception("unexpected error: %s", e)
            return _finish(code, args.kind, spec, log_file)
        if args.debug:
            log.exception("traceback")
    return _finish(code, args.kind, spec, log_file)


def _disk_full_message(e: BaseException):
    """Libraries that wrap the OSError in their own (safetensors: "... (os error 28)")."""
    text = str(e)
    if "No space left on device" in text or "(os error 28)" in text or "Disk quota exceeded" in text:
        return e
    return None


def _finish(code: int, kind: str, spec, log_file: Path | None) -> int:
    _upload_log(kind, spec, log_file)
    return code


def _upload_log(kind: str, spec, log_file: Path | None) -> None:
    if log_file is None:
        return
    try:
        if spec is None:
            return
        from jobs import layout
        from jobs.store import open_store, retry_budget, retry_seconds

        logging.shutdown()
        with retry_budget(min(5.0, retry_seconds())):  # a store that is down has had its retries already
            open_store(spec.experiment_uri).put_file(layout.log_key(job_name(kind, getattr(spec, 'run_key', None))), log_file)
    except Exception:  # the log is a convenience; never turn a result into a failure
        pass
    finally:
        log_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
