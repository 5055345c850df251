"""Frank-Wolfe engine: pure torch, no FusionBench import, testable on convex toys."""

from .lmo import GRANULARITIES, SCORES, VertexScores, select_hard, select_soft
from .options import HARD_VARIANTS, INNER_INITS, MERGE_FUNCTIONS, HardOptions, SoftOptions, SolverOptions
from .reading import PassOrder, VertexSource, score_vertices
from .records import IterationRecord, StopReason
from .simplex import project_onto_simplex
from .soft import FrankWolfeSoft
from .solver import FrankWolfeHard, LossAndGrad, Objective, SolverState
from .step_size import STEP_RULES, ConstantStep, LineSearch, OpenLoop, SlopeLineSearch, make_step_rule

__all__ = [
    "GRANULARITIES", "HARD_VARIANTS", "INNER_INITS", "MERGE_FUNCTIONS", "SCORES", "STEP_RULES", "ConstantStep", "FrankWolfeHard",
    "FrankWolfeSoft", "HardOptions", "IterationRecord", "LineSearch", "LossAndGrad", "Objective", "OpenLoop", "PassOrder",
    "SlopeLineSearch", "SoftOptions", "SolverOptions", "SolverState", "StopReason", "VertexScores", "VertexSource", "make_step_rule",
    "project_onto_simplex", "score_vertices", "select_hard", "select_soft",
]
