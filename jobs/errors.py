"""Job errors that say whether a retry can help; the entry point maps them to exit codes."""
from __future__ import annotations

EXIT_OK = 0
EXIT_PERMANENT = 3  # bad spec or bad input: retrying cannot help
EXIT_TEMPORARY = 75  # storage or network trouble (EX_TEMPFAIL): a retry may help


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
