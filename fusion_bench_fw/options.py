"""The adapters' own options (data, start point, outputs): frozen and validated once, when the
method is built, before any model or data is loaded. The solvers' options live in the engine
(``frank_wolfe/options.py``); names match the config keys of ``config/method/fw_{hard,soft}.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from .frank_wolfe.options import check

TASKPOOL_TASKS = "taskpool"  # objective_tasks value: the tasks the program's taskpool evaluates
INITS = ("pretrained", "task_arithmetic")  # or the path of a merged checkpoint directory
COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "float64")  # or None: the pretrained model's own dtype


def check_objective_tasks(tasks: Union[str, Sequence[str], None]) -> Union[str, Tuple[str, ...], None]:
    """``"taskpool"``, None, or the task names as a tuple; any other string is refused (a task list
    written without brackets would otherwise be read letter by letter)."""
    if isinstance(tasks, str):
        check(tasks == TASKPOOL_TASKS, f"invalid objective_tasks={tasks!r}: use '{TASKPOOL_TASKS}' (the tasks the taskpool evaluates), null (every pool task with data) or a list of task names")
        return tasks
    return None if tasks is None else tuple(str(t) for t in tasks)


@dataclass(frozen=True)
class RunOptions:
    loss: str = "cross_entropy"  # checked against the model family's losses when the pool is known
    # "taskpool" (the paper's setting), None (every pool task with data) or task names
    objective_tasks: Union[str, Tuple[str, ...], None] = TASKPOOL_TASKS
    samples_per_task: int = 100
    batch_size: int = 32
    seed: int = 0
    init: str = "pretrained"
    init_scaling_factor: float = 0.3  # for init=task_arithmetic
    pretrained_as_vertex: bool = True  # theta_0 is a vertex of M = conv{theta_0..theta_n}
    trajectory_path: Optional[str] = None  # default: {log_dir}/fw_trajectory.json
    trajectory_per_block: bool = False  # also record per-parameter weights every iteration (large)
    stream_safetensors: bool = True  # read safetensors checkpoints (local, hub cache, sharded) tensor by tensor (else modelpool.load_model)
    validate_checkpoints: bool = True  # one streaming pass before any data work: names, shapes, NaN/Inf
    checkpoint_dir: Optional[str] = None  # save the state after every iteration here; re-running resumes
    # screen out checkpoints farther than this x ||theta_0|| from theta_0 (not fine-tunes of it); None admits all
    max_relative_distance: Optional[float] = 0.5
    model_family: Optional[str] = None  # None: chosen from the pool's type (see families/)
    compute_dtype: Optional[str] = None  # dtype of theta, gradients and streamed checkpoints; None: the pretrained model's
    keep_freed_memory: bool = True  # glibc: keep freed tensor memory for reuse instead of page-faulting it back (cpu_allocator.py)

    def __post_init__(self):
        object.__setattr__(self, "objective_tasks", check_objective_tasks(self.objective_tasks))
        check(int(self.samples_per_task) >= 1, f"samples_per_task must be >= 1, got {self.samples_per_task}")
        check(int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(
            self.init in INITS or Path(str(self.init)).expanduser().exists(),
            f"invalid init={self.init!r}: use 'pretrained', 'task_arithmetic' or the path of a merged checkpoint directory (save_pretrained format) that exists",
        )
        check(
            self.compute_dtype is None or self.compute_dtype in COMPUTE_DTYPES,
            f"invalid compute_dtype={self.compute_dtype!r}: use null (the pretrained model's dtype) or one of {', '.join(COMPUTE_DTYPES)}",
        )
        check(
            self.max_relative_distance is None or float(self.max_relative_distance) > 0,
            f"max_relative_distance must be > 0, or null to admit every checkpoint, got {self.max_relative_distance}",
        )

    @property
    def init_from_checkpoint(self) -> Optional[Path]:
        return None if self.init in INITS else Path(str(self.init)).expanduser()
