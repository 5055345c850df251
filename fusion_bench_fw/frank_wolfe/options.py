"""The solvers' options: frozen, validated once when built, with messages that list allowed values.

The FusionBench adapters build these from the method config as soon as the method is constructed
(before any model or data is loaded); the solvers only read them. Option names match the config
keys of ``config/method/fw_{hard,soft}.yaml`` (``lmo_score`` is ``score`` here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .lmo import GRANULARITIES, SCORES
from .reading import BLOCK_GROUP
from .step_size import STEP_RULES, LineSearch, SlopeLineSearch, make_step_rule

HARD_VARIANTS = ("fw", "pairwise")
MERGE_FUNCTIONS = ("convex", "ties")
# which vertices FW-hard's LMO may pick: all admitted ones, or those theta_t holds plus each
# objective task's whole-model winner (see FrankWolfeHard.outside_candidates); option lmo_candidates
HARD_CANDIDATES = ("all", "task_winners")
# where FW-soft's coefficient search starts: the uniform mix, the FW step's point, or theta_t. The
# best point seen wins in every case (the FW step's point included), so every start is a descent step.
INNER_INITS = ("uniform", "fw_step", "current")
INNER_OPTIMIZERS = ("adam", "sgd")
# how FW-soft's FW step searches the line toward the gap's vertex: golden section (line_search_evals
# evaluations), or quadratic interpolation from the slope the FW gap gives (2-3 evaluations)
FW_STEP_SEARCHES = ("golden", "quadratic")
COEFFICIENTS = ("layer", "model")


def check_choice(option: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {option}={value!r}; allowed values: {', '.join(map(str, allowed))}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class SolverOptions:
    """Options of both solvers."""

    max_iters: int = 10
    gap_tol: float = 0.0  # stop when the FW gap falls to this value
    granularity: str = "task"  # LMO over whole models (task) or per parameter tensor (layer)
    score: str = "inner_product"  # inner_product = exact eq. 7; cosine = upstream heuristic
    # descent probe before a vertex is used: l(theta + probe_step (s - theta)) must not exceed
    # l(theta), else the vertex is skipped in this iteration and the next best one is taken. 0
    # disables it (the paper's plain LMO).
    probe_step: float = 0.05
    max_probe_rounds: int = 3
    # an iteration whose relative decrease (l_before - l_after) / |l_before| is below this ends the
    # run as stalled (monotone steps only). 0 keeps iterating while anything improves.
    min_rel_decrease: float = 1e-4
    # vertices scored together per parameter block by the block-major pass (extra memory grows
    # with this group, never with the number of vertices)
    lmo_block_group: int = BLOCK_GROUP
    # objective evaluations (forward passes) per line search: FW-hard's step rule line_search, and
    # FW-soft's FW step toward the gap's vertex
    line_search_evals: int = 10

    def __post_init__(self):
        check(int(self.max_iters) >= 1, f"max_iters must be >= 1, got {self.max_iters}")
        check(float(self.gap_tol) >= 0, f"gap_tol must be >= 0, got {self.gap_tol}")
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("lmo_score", self.score, SCORES)
        check(0 <= float(self.probe_step) < 1, f"probe_step must be in [0, 1) (0 disables the descent probe), got {self.probe_step}")
        check(int(self.max_probe_rounds) >= 1, f"max_probe_rounds must be >= 1, got {self.max_probe_rounds}")
        check(float(self.min_rel_decrease) >= 0, f"min_rel_decrease must be >= 0 (0 keeps iterating while anything improves), got {self.min_rel_decrease}")
        check(int(self.lmo_block_group) >= 1, f"lmo_block_group must be >= 1 (checkpoints scored together per parameter), got {self.lmo_block_group}")
        check(int(self.line_search_evals) >= 3, f"line_search_evals must be >= 3, got {self.line_search_evals}")


@dataclass(frozen=True)
class HardOptions(SolverOptions):
    """FW-hard (Algorithm 1): step rule, variant and merge function."""

    step_rule: str = "line_search"  # line_search (eq. 3) | open_loop (scale * 2/(t+2+offset)) | constant
    step_size: float = 0.1  # for step_rule=constant
    open_loop_scale: float = 1.0
    open_loop_offset: int = 0
    variant: str = "fw"  # fw: step toward the LMO vertex | pairwise: move weight from the worst held vertex to it
    merge_fn: str = "convex"  # convex | ties (the adapter supplies the TIES function, which needs theta_0)
    ties_threshold: float = 20  # percent of entries TIES keeps
    lmo_candidates: str = "all"

    def __post_init__(self):
        super().__post_init__()
        check_choice("lmo_candidates", self.lmo_candidates, HARD_CANDIDATES)
        check_choice("step_rule", self.step_rule, STEP_RULES)
        check_choice("variant", self.variant, HARD_VARIANTS)
        check_choice("merge_fn", self.merge_fn, MERGE_FUNCTIONS)
        check(
            self.variant != "pairwise" or self.merge_fn == "convex",
            f"variant=pairwise moves exact convex weights between models: use merge_fn=convex (got merge_fn={self.merge_fn})",
        )
        check(0 < float(self.step_size) <= 1, f"step_size must be in (0, 1], got {self.step_size}")
        check(float(self.open_loop_scale) > 0, f"open_loop_scale must be > 0, got {self.open_loop_scale}")
        check(int(self.open_loop_offset) >= 0, f"open_loop_offset must be >= 0, got {self.open_loop_offset}")
        check(0 < float(self.ties_threshold) <= 100, f"ties_threshold (percent of entries kept) must be in (0, 100], got {self.ties_threshold}")

    def make_step_rule(self):
        return make_step_rule(self.step_rule, step_size=self.step_size, scale=self.open_loop_scale, offset=self.open_loop_offset, evaluations=self.line_search_evals)


@dataclass(frozen=True)
class SoftOptions(SolverOptions):
    """FW-soft (§3.3): the inner simplex and its coefficient search."""

    topk: int = 1  # vertices picked per selection row (per objective task)
    per_task_selection: bool = True  # one top-k per objective task (the paper's task-wise top-k)
    coefficients: str = "layer"  # one simplex per parameter tensor (layer) or one shared (model)
    inner_steps: int = 20
    inner_lr: float = 0.05
    inner_optimizer: str = "adam"
    # theta_t is a point of the inner simplex (every step a descent step); False = paper eq. 9 verbatim
    include_current: bool = True
    inner_init: str = "uniform"
    # inner_init=uniform: when that search ends above the FW step's point, search again from there.
    # A second search per such iteration; on mini-TA20 it gained 2e-6 in loss (one run, same result)
    inner_restart: bool = False
    # False drops the gap's vertex (and the FW step toward it) from the inner simplex: the
    # selection-only simplex of version 0.1, which can idle at a large gap (an ablation)
    offer_gap_vertex: bool = True
    fw_step_search: str = "quadratic"

    def __post_init__(self):
        super().__post_init__()
        check_choice("inner_init", self.inner_init, INNER_INITS)
        check_choice("fw_step_search", self.fw_step_search, FW_STEP_SEARCHES)
        check_choice("coefficients", self.coefficients, COEFFICIENTS)
        check_choice("inner_optimizer", self.inner_optimizer, INNER_OPTIMIZERS)
        check(
            self.inner_init == "uniform" or self.include_current,
            f"inner_init={self.inner_init} needs include_current=true; use inner_init=uniform with include_current=false",
        )
        check(
            not self.inner_restart or (self.inner_init == "uniform" and self.include_current),
            f"inner_restart=true restarts a search from the uniform mix at the FW step's point: use it with inner_init=uniform and include_current=true (got inner_init={self.inner_init}, include_current={self.include_current})",
        )
        check(int(self.topk) >= 1, f"topk must be >= 1, got {self.topk}")
        check(int(self.inner_steps) >= 1, f"inner_steps must be >= 1, got {self.inner_steps}")
        check(float(self.inner_lr) > 0, f"inner_lr must be > 0, got {self.inner_lr}")

    def make_fw_step_search(self):
        """The line search of the FW step toward the gap's vertex (at most line_search_evals evaluations)."""
        if self.fw_step_search == "quadratic":
            return SlopeLineSearch(evaluations=self.line_search_evals)
        return LineSearch(evaluations=self.line_search_evals)

    def check_candidates(self, count: int) -> None:
        """Options that need the number of LMO candidates (known once the pool is)."""
        check(self.topk <= count, f"topk={self.topk} is larger than the number of LMO candidates ({count}); use topk <= {count}")
