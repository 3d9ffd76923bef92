"""The one error type of the data layer: input data that does not fit the task."""
from __future__ import annotations

from jobs.errors import PermanentError


class DataError(PermanentError):
    """Unknown dataset or language, a malformed file, a label outside the task's label set, an
    answer span that does not match its context. The message names the file and line, or the
    dataset and example id."""
