"""The comparison harness's pieces that need no run."""

from __future__ import annotations

from fusion_bench_fw.compare import RunResult, failure_line, markdown_table


def test_a_failed_runs_error_is_its_exception_line_not_hydras_hint():
    stderr = """Error executing job with overrides: ['method=dare/task_arithmetic']
Traceback (most recent call last):
  File "state_dict_arithmetic.py", line 617, in _validate_state_dict_list_not_empty
    raise ValueError(f"State dict at index {i} is empty")
ValueError: State dict at index 2 is empty

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""
    assert failure_line(stderr) == "ValueError: State dict at index 2 is empty"
    assert failure_line("killed\n") == "killed"  # no exception line: the last line
    assert failure_line("") == "(no stderr)"


def test_the_normalised_score_divides_each_task_by_its_own_fine_tune():
    fine_tuned = {"a": 0.8, "b": 0.5}
    rows = [RunResult("m", "M", "cmd", 2.0, {"a": 0.4, "b": 0.5}, None), RunResult("f", "F", "cmd", 1.0, {}, "boom")]
    table = markdown_table(rows, ["a", "b"], extra_rows=[("FT", fine_tuned)], normalise_by=fine_tuned).splitlines()
    assert table[0] == "| Method | a | b | Avg. | Norm. | Time (s) |"
    assert table[2] == "| FT | 80.0 | 50.0 | 65.0 | 100.0 | - |"
    assert table[3] == "| M | 40.0 | 50.0 | **45.0** | 75.0 | 2 |"  # (0.4/0.8 + 0.5/0.5) / 2, not 45 / 65
    assert table[4].startswith("| F | - | - | failed: boom | - |")
    assert "Norm." not in markdown_table(rows, ["a", "b"])


def test_a_method_returning_several_models_is_scored_by_its_report_key(tmp_path):
    """FusionBench's Surgery returns {"adamerging": ..., "surgery": ...}; its row is the surgery model's."""
    import json
    import sys

    from fusion_bench_fw.compare import MethodSpec, run_method

    # stands in for the fusion_bench program: writes a two-model report into path.log_dir
    writer = (
        "import json, pathlib, sys\n"
        "log_dir = pathlib.Path(next(a.split('=', 1)[1] for a in sys.argv if a.startswith('path.log_dir=')))\n"
        "log_dir.mkdir(parents=True, exist_ok=True)\n"
        "(log_dir / 'program_report.json').write_text(json.dumps({'adamerging': {'scenes': {'accuracy': 0.2}, 'average': {'accuracy': 0.2}},\n"
        "    'surgery': {'scenes': {'accuracy': 0.7}, 'average': {'accuracy': 0.7}}}))\n"
    )
    spec = MethodSpec("Surgery", [], launcher=[sys.executable, "-c", writer], report_key="surgery")
    result = run_method("surgery", spec, modelpool="p", taskpool="t", out_dir=tmp_path)
    assert result.error is None and result.accuracy == {"scenes": 0.7}
    spec.report_key = None  # without it, neither section is read as tasks
    assert run_method("plain", spec, modelpool="p", taskpool="t", out_dir=tmp_path).accuracy == {}
    assert json.loads((tmp_path / "runs" / "plain" / "program_report.json").read_text())["surgery"]["scenes"]["accuracy"] == 0.7
