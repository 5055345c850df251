"""Step-size rules on one-dimensional functions with known minima: the golden-section line search,
the quadratic search from a known slope, open loop and constant."""

from __future__ import annotations

import math

import pytest

from fusion_bench_fw.frank_wolfe import LineSearch, SlopeLineSearch, make_step_rule


def _counted_parabola(minimizer):
    """(gamma - minimizer)^2 + 1, and the list of the gammas it is called at."""
    calls = []

    def loss_at(gamma):
        calls.append(gamma)
        return (gamma - minimizer) ** 2 + 1.0

    return loss_at, calls


@pytest.mark.parametrize("minimizer", [0.0, 0.137, 0.37, 0.8, 1.0])
def test_line_search_finds_one_dimensional_minimum(minimizer):
    loss_at, calls = _counted_parabola(minimizer)
    gamma, loss = LineSearch(evaluations=20).choose(0, loss_at, loss_at_zero=minimizer**2 + 1.0)
    assert abs(gamma - minimizer) < 1e-3
    assert loss == pytest.approx((gamma - minimizer) ** 2 + 1.0)
    # bounded budget: 19 interior points + gamma = 1, then the halvings when no tried step helps
    assert len(calls) == 20 + (LineSearch().backtracks if minimizer == 0.0 else 0)


def test_line_search_refuses_a_direction_that_only_hurts():
    gamma, _ = LineSearch(evaluations=8).choose(0, lambda g: 1.0 + g, loss_at_zero=1.0)
    assert gamma == 0.0


@pytest.mark.parametrize("minimizer", [0.137, 0.37, 0.8, 1.0, 1.7])
def test_slope_line_search_finds_a_quadratic_minimum_in_two_evaluations(minimizer):
    """On a quadratic the model through f(0), f'(0) and f(1) is exact: gamma = 1, then its minimiser."""
    loss_at, calls = _counted_parabola(minimizer)
    gamma, loss = SlopeLineSearch(evaluations=10).choose(0, loss_at, loss_at_zero=minimizer**2 + 1.0, slope=-2 * minimizer)
    assert gamma == pytest.approx(min(minimizer, 1.0)) and loss == pytest.approx((gamma - minimizer) ** 2 + 1.0)
    assert len(calls) == (1 if minimizer >= 1.0 else 2)


def test_slope_line_search_backtracks_and_stays_within_its_budget():
    """Strong curvature near 0 (a quartic whose minimum is at 0.01): gamma = 1 and the quadratic's
    minimiser both raise the loss; backtracking finds a decrease, within the evaluation budget."""
    calls = []

    def loss_at(gamma):
        calls.append(gamma)
        return (gamma - 0.01) ** 4 * 1e4 + 0.0

    f0, slope = loss_at(0.0), -4e4 * 0.01**3
    calls.clear()
    gamma, loss = SlopeLineSearch(evaluations=6).choose(0, loss_at, loss_at_zero=f0, slope=slope)
    assert 0 < gamma < 0.02 and loss < f0 and len(calls) <= 6
    # a non-finite loss at a trial (a diverging far point) is stepped back from, not fitted
    gamma, _ = SlopeLineSearch(evaluations=6).choose(0, lambda g: math.nan if g > 0.6 else (g - 0.3) ** 2, loss_at_zero=0.09, slope=-0.6)
    assert gamma == pytest.approx(0.3, abs=1e-6)
    # a direction that only hurts (a wrong slope) gives gamma = 0 after the budget
    assert SlopeLineSearch(evaluations=4).choose(0, lambda g: 1.0 + g, loss_at_zero=1.0, slope=-1.0)[0] == 0.0
    # no usable slope: the golden section
    assert SlopeLineSearch(evaluations=20).choose(0, lambda g: (g - 0.37) ** 2, loss_at_zero=0.37**2)[0] == pytest.approx(0.37, abs=1e-3)


def test_open_loop_and_constant_rules():
    assert make_step_rule("open_loop").choose(0, None, 0.0)[0] == 1.0
    assert make_step_rule("open_loop", scale=0.5, offset=2).choose(2, None, 0.0)[0] == pytest.approx(0.5 * 2 / 6)
    assert make_step_rule("constant", step_size=0.3).choose(7, None, 0.0)[0] == 0.3
    with pytest.raises(ValueError, match="allowed: line_search, open_loop, constant"):
        make_step_rule("armijo")


def test_line_search_halves_its_step_when_the_golden_section_finds_no_decrease():
    """The minimum at 0.001 lies below every point a 10-evaluation golden section tries (the
    smallest is ~0.056, already worse than gamma = 0); halving from there finds a decrease."""
    def loss_at(gamma):
        return (gamma - 0.001) ** 2

    gamma, loss = LineSearch(evaluations=10).choose(0, loss_at, loss_at_zero=loss_at(0.0))
    assert 0 < gamma < 0.002 and loss < loss_at(0.0)
    assert LineSearch(evaluations=10, backtracks=0).choose(0, loss_at, loss_at_zero=loss_at(0.0))[0] == 0.0
