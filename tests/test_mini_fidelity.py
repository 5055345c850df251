"""The pool card's fidelity criteria: verdicts from the figures, and the micro pool's card."""

from __future__ import annotations

import pytest

from fusion_bench_fw.mini import fidelity


def _figures(**changes):
    figures = {"zero_shot": 0.55, "finetuned": 0.85, "ta_relevant_best": 0.71, "ta_relevant_0.3": 0.66, "ta_all_0.3": 0.49,
               "simple_average_all": 0.56, "adamerging_objective": 0.73, "adamerging_all": 0.58}
    return {**figures, **changes}


def _verdicts(figures):
    return {r["key"]: r["verdict"] for r in fidelity.judge(figures)}


def test_each_criterion_passes_and_misses_at_its_threshold():
    assert set(_verdicts(_figures()).values()) == {"PASS"}
    rows = {r["key"]: r for r in fidelity.judge(_figures())}
    assert rows["ta_relevant_recovers"]["value"] == pytest.approx(0.16 / 0.30)
    assert rows["ta_interference"]["value"] == pytest.approx(0.17)
    misses = {
        "finetune_gap": {"finetuned": 0.79},
        "ta_relevant_recovers": {"ta_relevant_best": 0.69},  # 0.14 of a 0.30 gap
        "ta_interference": {"ta_all_0.3": 0.52},
        "adamerging_objective_beats_ta": {"adamerging_objective": 0.70},
        "adamerging_all_above_zero_shot": {"adamerging_all": 0.30},
        "average_above_zero_shot": {"simple_average_all": 0.549},
    }
    for key, change in misses.items():
        verdicts = _verdicts(_figures(**change))
        assert verdicts[key] == "MISS", key
        assert [k for k, v in verdicts.items() if v == "MISS"] == [key] or key == "finetune_gap"


def test_an_absent_figure_is_not_measured_not_a_pass():
    verdicts = _verdicts(_figures(adamerging_all=None, adamerging_objective=None))
    assert verdicts["adamerging_all_above_zero_shot"] == verdicts["adamerging_objective_beats_ta"] == "not measured"
    assert verdicts["finetune_gap"] == "PASS"
    table = "\n".join(fidelity.markdown(fidelity.judge(_figures(adamerging_all=None))))
    assert "| not measured |" in table and "53%" in table


def test_the_micro_cards_cheap_criteria(mini_micro_card):
    """On the CI-size pool the two criteria meant to hold there do (measured: gap 30 points, averaging
    4 points above zero-shot); the task-arithmetic ones are not asserted: a 64-wide, 2-layer tower of
    5 models recovers too little and interferes too little (26% and 7 points in its card). The build
    judges the card from its own figures, so the verdicts agree with a judgement made here."""
    rows = {r["key"]: r for r in mini_micro_card["fidelity"]}
    assert rows == {r["key"]: r for r in fidelity.judge(fidelity.figures_of(mini_micro_card))}
    ea = mini_micro_card["eval_average"]
    assert rows["finetune_gap"]["value"] == pytest.approx(ea["finetuned"] - ea["zero_shot"])
    assert rows["finetune_gap"]["verdict"] == "PASS"
    assert rows["average_above_zero_shot"]["verdict"] == "PASS"
    assert rows["adamerging_all_above_zero_shot"]["verdict"] == "not measured"  # added by card-adamerging, not the build
