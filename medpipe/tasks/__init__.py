"""The task seam: a competition task shape found by name (``task:`` in the config, ``siim`` by
default). Each task implements :class:`~medpipe.tasks.base.Task`; see docs/architecture.md.

Example:
    >>> get_task("siim").families
    ('segment', 'gate')
"""

from __future__ import annotations

from medpipe.tasks.base import Score, Task
from medpipe.tasks.siim import SiimTask

__all__ = ["Task", "Score", "TASKS", "DEFAULT_TASK", "get_task"]

DEFAULT_TASK = "siim"
# The registry: a task's config name -> its implementation (timm's register_model, in small).
TASKS: dict[str, type[Task]] = {SiimTask.name: SiimTask}


def get_task(name: str | None) -> Task:
    """The task called ``name`` (None: the default); an unknown name lists the known ones."""
    name = DEFAULT_TASK if name is None else str(name)
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(
            f"task: {name!r} is not a task medpipe knows ({', '.join(TASKS)})"
        ) from None
