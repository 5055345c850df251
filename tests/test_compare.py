"""The comparison harness's pieces that need no run."""

from __future__ import annotations

from fusion_bench_fw.compare import failure_line


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
