"""The one job entry point: `python -m jobs <train|evaluate|average> --spec PATH|-`.

The spec may also come from the JOB_SPEC environment variable (how Kubernetes Jobs pass it).
Exit codes: 0 done, 3 permanent error (retrying cannot help), 75 temporary error (retry).
The job's log is copied into the store (logs/<job name>.log) when it ends.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from jobs.errors import EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, JobError, SpecError
from jobs.spec import spec_from_json

log = logging.getLogger("jobs")


def _read_spec_text(arg: str | None) -> str:
    if arg == "-":
        return sys.stdin.read()
    if arg:
        try:
            return Path(arg).read_text(encoding="utf-8")
        except OSError as e:
            raise SpecError(f"cannot read spec file {arg}: {e.strerror}") from None
    text = os.environ.get("JOB_SPEC")
    if not text:
        raise SpecError("no spec: pass --spec PATH (or - for stdin) or set JOB_SPEC")
    return text


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


def job_name(kind: str, spec) -> str:
    return os.environ.get("JOB_NAME") or f"{kind}-{getattr(spec, 'run_key', None) or os.getpid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("train", "evaluate", "average"))
    parser.add_argument("--spec", help="spec JSON file, or - for stdin (default: $JOB_SPEC)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    log_file = Path(tempfile.mkstemp(prefix="xlt-job-", suffix=".log")[1])
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    spec = None
    code = EXIT_OK
    try:
        spec = spec_from_json(args.kind, _read_spec_text(args.spec))
        log.info("%s job starting: %s", args.kind, getattr(spec, "run_key", ""))
        _run(args.kind, spec)
        log.info("%s job done", args.kind)
    except JobError as e:
        code = e.exit_code
        log.error("%s", e)
        if args.debug:
            log.exception("traceback")
    except (OSError, ConnectionError, TimeoutError) as e:
        code = EXIT_TEMPORARY
        log.error("temporary failure: %s", e)
        if args.debug:
            log.exception("traceback")
    except Exception as e:  # a bug: permanent, and the traceback is what a developer needs
        code = EXIT_PERMANENT
        log.exception("unexpected error: %s", e)
    finally:
        _upload_log(args.kind, spec, log_file)
    return code


def _upload_log(kind: str, spec, log_file: Path) -> None:
    if spec is None:
        return
    try:
        from jobs import layout
        from jobs.store import open_store

        logging.shutdown()
        open_store(spec.experiment_uri).put_file(layout.log_key(job_name(kind, spec)), log_file)
    except Exception:  # the log is a convenience; never turn a result into a failure
        pass
    finally:
        log_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
