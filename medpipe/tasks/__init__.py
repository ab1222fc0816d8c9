"""The task seam: a competition task shape found by name (``task:`` in the config, ``siim`` by
default). Each task implements :class:`~medpipe.tasks.base.Task`; see docs/architecture.md.

Example:
    >>> get_task("siim").families
    ('segment', 'gate')
"""

from __future__ import annotations

from pathlib import Path

from medpipe.errors import SubmissionError
from medpipe.tasks.base import Score, Task
from medpipe.tasks.multilabel import MultilabelTask
from medpipe.tasks.siim import SiimTask

__all__ = ["Task", "Score", "TASKS", "DEFAULT_TASK", "get_task", "task_of_submission"]

DEFAULT_TASK = "siim"
# The registry: a task's config name -> its implementation (timm's register_model, in small).
TASKS: dict[str, type[Task]] = {SiimTask.name: SiimTask, MultilabelTask.name: MultilabelTask}


def get_task(name: str | None) -> Task:
    """The task called ``name`` (None: the default); an unknown name lists the known ones."""
    name = DEFAULT_TASK if name is None else str(name)
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(
            f"task: {name!r} is not a task medpipe knows ({', '.join(TASKS)})"
        ) from None


def task_of_submission(path: str | Path) -> Task:
    """The task whose submission header ``path`` has (``medpipe score`` without ``--task``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path) as handle:
        header = tuple(c.strip() for c in handle.readline().strip().split(","))
    for task in TASKS.values():
        if header == task.submission_header:
            return task()
    # A header that names a task's id column but a wrong value column is that task's submission
    # gone wrong: its own validator then says which column it expected.
    for task in TASKS.values():
        if header[:1] == task.submission_header[:1]:
            return task()
    known = "; ".join(f"{n}: {','.join(t.submission_header)}" for n, t in TASKS.items())
    raise SubmissionError(f"{path}: header {','.join(header)} is no task's ({known})")
