"""Which tasks a merging objective uses: shared by FW-hard, FW-soft and DF-Merge."""

from __future__ import annotations

import logging
from typing import List, Sequence, Union

from .options import TASKPOOL_TASKS

log = logging.getLogger(__name__)


def resolve_objective_tasks(family, loss: str, requested: Union[str, Sequence[str], None], algorithm) -> List[str]:
    """The objective's tasks: an explicit list, the taskpool's tasks (``"taskpool"``, the paper's
    setting: samples of each evaluated task), or (None) every pool task with data for ``loss``.
    A task without data for the loss is refused, naming the split it needs and the tasks available."""
    split = family.loss_splits[loss]
    available = family.tasks_with_data(loss)
    from_taskpool = requested == TASKPOOL_TASKS
    if from_taskpool:
        taskpool = getattr(getattr(algorithm, "_program", None), "taskpool", None)  # `_program`: FusionBench sets it on the method
        requested = family.taskpool_tasks(taskpool) if taskpool is not None else None
        if requested is None:
            log.warning("objective_tasks=%s but no taskpool is configured or it does not say which tasks it evaluates: "
                        "using every pool task with a %s split (set method.objective_tasks to choose)", TASKPOOL_TASKS, split)
    if not requested:
        if not available:
            raise ValueError(
                f"loss={loss!r} needs {split} datasets but the model pool defines none; "
                f"add `{split}_datasets` to the modelpool config or set method.objective_tasks"
            )
        return available
    missing = [t for t in requested if t not in available]
    if missing:
        named = f"objective_tasks={TASKPOOL_TASKS!r}: the taskpool's task(s)" if from_taskpool else "objective task(s)"
        raise ValueError(
            f"{named} {missing} have no {split} dataset in the model pool (loss={loss!r} reads the "
            f"{split} split); available: {available}. Set method.objective_tasks to a list of available "
            f"tasks, or null for all."
        )
    return list(requested)
