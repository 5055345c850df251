"""What one iteration reports: a typed record the loop reads, and its JSON form for the trajectory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class StopReason(str, Enum):
    """Why a run ended; the trajectory's summary carries the value and a sentence with the numbers."""

    CONVERGED = "converged"  # FW gap <= gap_tol: a certificate over the gap's set
    STALLED = "stalled"  # an iteration lowered the objective by less than min_rel_decrease (relative)
    MAX_ITERS = "max_iters"


@dataclass
class IterationRecord:
    """One FW iteration. ``converged`` and ``stalled`` decide whether the run goes on; ``details``
    holds what only one method reports (FW-hard's away vertex, FW-soft's coefficients, ...)."""

    fw_gap: float
    loss_before: float
    loss_after: float
    selected: Any  # a model name (task-wise) or {model: blocks won} (layer-wise), or a list of them
    rejected: List[str] = field(default_factory=list)  # vertices the descent probe skipped
    converged: bool = False  # the gap was at most gap_tol: no step taken
    step_size: Optional[float] = None
    relative_decrease: float = 0.0
    stalled: bool = False
    iteration: int = 0
    time_s: float = 0.0
    time_gradient_s: float = 0.0
    time_lmo_s: float = 0.0
    weights: Dict[str, float] = field(default_factory=dict)  # parameter-weighted merge weights after the step
    weights_exact: bool = True
    in_hull: bool = True
    details: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        """A flat dict (``details`` merged in), as ``fw_trajectory.json`` stores it."""
        out = asdict(self)
        out.update(out.pop("details"))
        return out
