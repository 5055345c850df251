"""FW-hard's descent probe on toy least-squares problems: which vertex it lets through, and what an
iteration costs when it leaves only the model theta_t already is."""

from __future__ import annotations

import pytest
import torch

from engine_toys import BLOCKS, LeastSquares, ListSource, hard, initial_state, solver_kwargs


def test_descent_probe_skips_a_far_vertex_that_wins_the_linear_model():
    """A vertex far away in a descent direction wins the plain LMO, but every real step toward it
    overshoots; the probe skips it for the nearby vertex that actually lowers the loss."""
    dim = 3
    target = {k: torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    problem = LeastSquares({k: torch.eye(dim, dtype=torch.float64) for k in BLOCKS}, target)
    start = {k: torch.zeros(dim, dtype=torch.float64) for k in BLOCKS}
    near = {k: 0.5 * torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    far = {k: 100.0 * torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    source = ListSource(["_pretrained_", "near", "far"], [start, near, far])
    plain = hard(**solver_kwargs(problem, source, max_iters=1), step_rule="constant", step_size=0.5)
    probed = hard(**{**solver_kwargs(problem, source, max_iters=1), "probe_step": 0.05}, step_rule="constant", step_size=0.5)
    plain_state, probed_state = initial_state([start, near, far]), initial_state([start, near, far])
    plain.run(plain_state)
    probed.run(probed_state)
    assert plain_state.trajectory[0]["selected"] == "far"
    assert probed_state.trajectory[0]["selected"] == "near"
    assert probed_state.trajectory[0]["rejected"] == ["far"]
    assert problem.loss(probed_state.theta) < problem.loss(start) < problem.loss(plain_state.theta)
    # the reported FW gap is still the plain one, over every vertex
    assert probed_state.trajectory[0]["fw_gap"] == pytest.approx(plain_state.trajectory[0]["fw_gap"])


def test_a_step_to_where_theta_already_is_reads_nothing_and_searches_nothing():
    """The probe rejects the only other vertex, so the LMO's choice is the model theta_t already is:
    the direction is zero, and the iteration ends after the probes (no vertex read for the step, no
    line search), with step 0 and the gap still reported."""
    dim = 3
    problem = LeastSquares({k: torch.eye(dim, dtype=torch.float64) for k in BLOCKS}, {k: torch.ones(dim, dtype=torch.float64) for k in BLOCKS})
    start = {k: torch.zeros(dim, dtype=torch.float64) for k in BLOCKS}
    far = {k: 100.0 * torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    source = ListSource(["_pretrained_", "far"], [start, far])
    losses = []
    loss = problem.loss
    problem.loss = lambda params: losses.append(1) or loss(params)
    solver = hard(**{**solver_kwargs(problem, source, max_iters=1), "probe_step": 0.05})
    state = initial_state([start, far])
    solver.run(state)
    record = state.trajectory[0]
    assert (record["selected"], record["rejected"], record["step_size"]) == ("_pretrained_", ["far"], 0.0)
    assert record["fw_gap"] > 0 and record["stalled"]
    # the gradient pass's and the two probes' (far, then the vertex theta_t is); the line search
    # along the zero direction took 22 more before
    assert len(losses) == 3
    assert source.loads == 4  # the LMO pass reads both vertices, each probe one; the step none
    assert all(torch.equal(state.theta[k], start[k]) for k in BLOCKS)
