"""The averaging error (kept apart so that the light registry and the engine share it)."""
from __future__ import annotations

from jobs.errors import PermanentError


class AverageError(PermanentError):
    """Inputs that must not be averaged together, or an average that cannot be made from them."""
