"""The task registry: a plain dict from task id to task object."""
from __future__ import annotations

from jobs.errors import SpecError
from jobs.tasks.ner import NERTask
from jobs.tasks.nli import NLITask
from jobs.tasks.qa import QATask

TASKS = {"nli": NLITask(), "ner": NERTask(), "tydiqa": QATask()}


def get_task(name: str):
    try:
        return TASKS[name]
    except KeyError:
        raise SpecError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
