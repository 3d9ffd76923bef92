"""Job errors that say whether a retry can help; the entry point maps them to exit codes."""
from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_PERMANENT = 3  # bad spec or bad input: retrying cannot help
EXIT_TEMPORARY = 75  # storage or network trouble (EX_TEMPFAIL): a retry may help

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class JobError(Exception):
    """Base of errors a job reports in one line."""

    exit_code = EXIT_PERMANENT


class PermanentError(JobError):
    """Bad spec, bad input, bad data, mismatched snapshots: the same job will fail again."""

    exit_code = EXIT_PERMANENT


class TemporaryError(JobError):
    """Storage or network failure: the same job may succeed later."""

    exit_code = EXIT_TEMPORARY


class SpecError(PermanentError):
    """A job spec that is malformed or names something unknown."""


class MalformedFile(PermanentError):
    """A file the system reads (manifest, draw record, complete.json, results) that does not
    parse or lacks a field; the message names the file or key."""


class DiskFull(TemporaryError):
    """No space left (ENOSPC) or quota exceeded (EDQUOT) on a scratch or store disk; the
    message names the path. Temporary: another node, or the same one after a clean-up, may
    have room."""


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_in_chain(error: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `error` (itself, a cause or a context), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if is_disk_full(error):
            return error  # type: ignore[return-value]
        error = error.__cause__ or error.__context__
    return None
