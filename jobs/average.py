"""The average job's entry point (`python -m jobs average --spec spec.json`).

The code lives in jobs/averaging/ (one concern per module: methods, members, greedy, inputs,
engine, job); this module is what jobs/__main__.py calls.
"""
from __future__ import annotations

from jobs.averaging.errors import AverageError
from jobs.averaging.job import run_average

__all__ = ["AverageError", "run_average"]
