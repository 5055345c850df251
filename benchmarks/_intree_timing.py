"""Phase timers for FusionBench's own methods, which record no timings of their own.

Our methods need none of this: their solver writes ``time_s``, ``time_gradient_s`` and
``time_lmo_s`` per iteration into ``fw_trajectory.json``. FusionBench's in-tree FW-Merging and
AdaMerging do not, so here -- and only here -- their methods are wrapped on the class (or the pool
object) in the child process that runs them, to see where their time goes and when their
iteration starts. Nothing else of theirs is changed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

# method -> {attribute of the algorithm's class: timer label}
INTREE_PHASES = {
    "frank_wolfe_iteration": "gradient",
    "frank_wolfe_selection": "lmo",
    "run_adamerging": "inner_loop",  # fw_soft only
    "setup_zero_shot_classification_head": "zero_shot_heads",
}
ADAMERGING_PHASES = {
    "construct_layer_wise_merged_model": "build_wrapped_model",
    "setup_zero_shot_classification_head": "zero_shot_heads",
    "on_test_time_adaptation_start": "tta_start_hook",
    "test_time_adaptation": "test_time_adaptation",
}


class Timers:
    """Wall time per label, summed over calls; first start and last end of each label."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync  # on CUDA: torch.cuda.synchronize, so a timer holds its kernels' time
        self.total: Dict[str, float] = {}
        self.first_start: Dict[str, float] = {}
        self.last_end: Dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            self.first_start.setdefault(label, start)
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                self.last_end[label] = time.perf_counter()
                self.total[label] = self.total.get(label, 0.0) + self.last_end[label] - start

        setattr(owner, attr, timed)


def instrument(method: str, algorithm: Any, modelpool: Any, sync: Callable[[], None]) -> Timers:
    """Wrap the phases of an in-tree method (``intree_fw_*`` or ``adamerging``) and its pool's model loads."""
    timers = Timers(sync)
    phases = ADAMERGING_PHASES if method == "adamerging" else INTREE_PHASES
    cls = type(algorithm)
    for attr, label in phases.items():
        if hasattr(cls, attr):
            timers.wrap(cls, attr, label)
    timers.wrap(modelpool, "load_model", "load_model")
    return timers


def iteration_start(method: str, timers: Timers) -> Optional[float]:
    """When the iteration began (``perf_counter``): in-tree FW at its first gradient; AdaMerging once
    its zero-shot heads are built (its adaptation step and merge follow)."""
    if method == "adamerging":
        return timers.last_end.get("tta_start_hook")
    return timers.first_start.get("gradient")
