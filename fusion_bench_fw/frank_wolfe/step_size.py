"""Step-size rules for Frank-Wolfe: exact line search (eq. 3), open loop 2/(t+2), constant.

Each rule is a small object with ``choose(iteration, loss_at, loss_at_zero, slope=None)`` where
``loss_at(gamma)`` evaluates the objective at ``theta_t + gamma * (s_t - theta_t)``; only line
search calls it, and ``slope`` is the derivative at gamma = 0 when the caller knows it (for a
Frank-Wolfe direction, minus the FW gap); only :class:`SlopeLineSearch` uses it. ``monotone`` says
whether the rule never raises the objective (then a step that barely lowers it means the run has
stalled, see the solver's ``min_rel_decrease``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

LossAt = Callable[[float], float]

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # 1/golden ratio


@dataclass
class LineSearch:
    """Golden-section search for argmin_{gamma in [0, 1]} loss(theta_t + gamma (s_t - theta_t)).

    ``evaluations`` bounds the number of objective evaluations (forward passes, no backward).
    The known loss at gamma = 0 and the loss at gamma = 1 are compared with the interior optimum,
    so a monotone decrease gives 1. When no tried gamma lowers the loss (the decrease lies below the
    smallest gamma the golden section reached, as it does for a far vertex with strong curvature),
    the step is halved from there up to ``backtracks`` times: for a descent direction (FW gap > 0)
    of a smooth objective some small enough step always lowers it, which is what makes a FW
    iteration with a positive gap make progress. A direction that does not help gives gamma = 0.
    """

    evaluations: int = 10
    backtracks: int = 12
    monotone = True

    def __post_init__(self):
        if self.evaluations < 3:
            raise ValueError(f"line search needs at least 3 evaluations, got {self.evaluations}")
        if self.backtracks < 0:
            raise ValueError(f"line search backtracks must be >= 0, got {self.backtracks}")

    def choose(self, iteration: int, loss_at: LossAt, loss_at_zero: float, slope: Optional[float] = None) -> Tuple[float, float]:
        lo, hi = 0.0, 1.0
        x1 = hi - _INV_PHI * (hi - lo)
        x2 = lo + _INV_PHI * (hi - lo)
        f1, f2 = loss_at(x1), loss_at(x2)
        candidates = [(0.0, loss_at_zero), (x1, f1), (x2, f2)]
        for _ in range(self.evaluations - 3):
            if f1 <= f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - _INV_PHI * (hi - lo)
                f1 = loss_at(x1)
                candidates.append((x1, f1))
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + _INV_PHI * (hi - lo)
                f2 = loss_at(x2)
                candidates.append((x2, f2))
        candidates.append((1.0, loss_at(1.0)))
        gamma, loss = min(candidates, key=lambda pair: (pair[1], pair[0]))
        trial = min(x for x, _ in candidates if x > 0)
        for _ in range(self.backtracks if gamma == 0.0 else 0):
            trial /= 2.0
            value = loss_at(trial)
            if value < loss_at_zero:
                return trial, value
        return gamma, loss


@dataclass
class SlopeLineSearch:
    """argmin_{gamma in [0, 1]} by quadratic interpolation, for a direction whose slope at 0 is known.

    A Frank-Wolfe step knows the derivative of the objective at gamma = 0 for free: minus the FW gap,
    from the gradient and the LMO tables already computed. With it, a quadratic through f(0), f'(0)
    and one trial value is a model of the whole line: try gamma = 1, then the model's minimiser (unless
    it is 1); stop when the model refitted through the last trial agrees with it (within ``tolerance``)
    and that trial lowered the loss, else refit through the newest trial (safeguarded to
    [0.1, 0.5] x the trial when the trial did not lower the loss, as in backtracking). Two or three
    evaluations where the golden section spends ``evaluations``; at most ``evaluations``. The best
    gamma seen is returned (0 when none lowers the loss). Without a usable slope (None or >= 0) it
    falls back to :class:`LineSearch`.
    """

    evaluations: int = 10
    tolerance: float = 0.2
    monotone = True

    def __post_init__(self):
        if self.evaluations < 2:
            raise ValueError(f"slope line search needs at least 2 evaluations, got {self.evaluations}")

    def choose(self, iteration: int, loss_at: LossAt, loss_at_zero: float, slope: Optional[float] = None) -> Tuple[float, float]:
        if slope is None or not slope < 0 or not math.isfinite(slope):
            return LineSearch(evaluations=max(3, self.evaluations)).choose(iteration, loss_at, loss_at_zero)
        best = (0.0, loss_at_zero)
        trial = 1.0
        for _ in range(self.evaluations):
            value = loss_at(trial)
            if not math.isfinite(value):  # e.g. a far point where the model diverges: step back
                trial *= 0.5
                continue
            if value < best[1]:
                best = (trial, value)
            curvature = 2.0 * (value - loss_at_zero - slope * trial) / (trial * trial)
            if curvature <= 0:
                # no curvature up to this trial: the loss keeps falling along the line, so the
                # trial (the farthest point tried, 1 at first) is the best of [0, trial]
                if value < loss_at_zero:
                    break
                following = 0.5 * trial
            else:
                following = min(1.0, -slope / curvature)
                # gamma = 1 stands only where the model's minimum is at the boundary; a later trial
                # stands once the model refitted through it points back to it
                agrees = following >= trial if trial == 1.0 else abs(following - trial) <= self.tolerance * trial
                if value < loss_at_zero and agrees:
                    break
                if value >= loss_at_zero:
                    following = min(max(following, 0.1 * trial), 0.5 * trial)
            if best[0] > 0 and following == trial:
                break
            trial = following
        return best


@dataclass
class OpenLoop:
    """gamma_t = scale * 2 / (t + 2 + offset); offset > 0 keeps a non-trivial initial merge."""

    scale: float = 1.0
    offset: int = 0
    monotone = False

    def choose(self, iteration: int, loss_at: LossAt, loss_at_zero: float, slope: Optional[float] = None) -> Tuple[float, None]:
        return min(1.0, self.scale * 2.0 / (iteration + 2 + self.offset)), None


@dataclass
class ConstantStep:
    value: float = 0.1
    monotone = False

    def choose(self, iteration: int, loss_at: LossAt, loss_at_zero: float, slope: Optional[float] = None) -> Tuple[float, None]:
        return self.value, None


STEP_RULES = ("line_search", "open_loop", "constant")


def make_step_rule(name: str, *, step_size: float = 0.1, scale: float = 1.0, offset: int = 0, evaluations: int = 10):
    if name == "line_search":
        return LineSearch(evaluations=evaluations)
    if name == "open_loop":
        return OpenLoop(scale=scale, offset=offset)
    if name == "constant":
        return ConstantStep(value=step_size)
    raise ValueError(f"unknown step rule {name!r}; allowed: {', '.join(STEP_RULES)}")
