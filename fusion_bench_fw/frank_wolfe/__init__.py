"""Frank-Wolfe engine: pure torch, no FusionBench import, testable on convex toys."""

from .lmo import GRANULARITIES, SCORES, VertexScores, VertexSource, score_vertices, select_hard, select_soft
from .simplex import project_onto_simplex
from .soft import INNER_INITS, FrankWolfeSoft
from .solver import HARD_VARIANTS, FrankWolfeHard, LossAndGrad, Objective, SolverState, StopReason
from .step_size import STEP_RULES, ConstantStep, LineSearch, OpenLoop, make_step_rule

__all__ = [
    "GRANULARITIES", "HARD_VARIANTS", "INNER_INITS", "SCORES", "STEP_RULES", "ConstantStep", "FrankWolfeHard", "FrankWolfeSoft",
    "LineSearch", "LossAndGrad", "Objective", "OpenLoop", "SolverState", "StopReason", "VertexScores", "VertexSource",
    "make_step_rule", "project_onto_simplex", "score_vertices", "select_hard", "select_soft",
]
