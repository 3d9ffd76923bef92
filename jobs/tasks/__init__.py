"""The task registry: a plain dict from task id to task class.

`get_task(name, **options)` builds the task with its encoding/scoring options (NER label scheme,
QA question mode); without options a task has the paper's defaults. Read the options of a spec
with `jobs.spec.task_options(spec)`, which maps a missing field to the behaviour before it existed.
"""
from __future__ import annotations

from jobs.errors import SpecError
from jobs.tasks.ner import NERTask
from jobs.tasks.nli import NLITask
from jobs.tasks.qa import QATask

TASKS = {"nli": NLITask, "ner": NERTask, "tydiqa": QATask}


def get_task(name: str, **options):
    try:
        cls = TASKS[name]
    except KeyError:
        raise SpecError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"task {name}: {e}") from None
