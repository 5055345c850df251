"""Where the FW trajectory goes: a JSON file in the run's log dir, the Fabric logger, a progress bar.

Files are written atomically (temporary file + rename) and never replace an existing output:
a second run into the same directory gets ``fw_trajectory_1.json`` and so on. The final write also
draws ``fw_trajectory.png`` (same stem) with the objective, the FW gap and the merge weights.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional


def unused_path(path: Path) -> Path:
    """``path`` if free, else ``stem_1.suffix``, ``stem_2.suffix``, ... (never overwrite)."""
    if not path.exists():
        return path
    for version in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}_{version}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"too many existing versions of {path}")


def run_log_dir(algorithm) -> Optional[Path]:
    """The run's log directory: the algorithm's Fabric log dir, else the program's ``path.log_dir``."""
    log_dir = algorithm.log_dir
    if log_dir is None:
        program = getattr(algorithm, "_program", None)
        try:
            log_dir = program.config.path.log_dir if program is not None else None
        except Exception:  # a program without the usual `path` config
            log_dir = None
    return Path(log_dir) if log_dir is not None else None


def run_cache_dir(algorithm) -> Optional[Path]:
    """Where a model family may cache this run's derived artefacts (zero-shot heads): ``{log_dir}/cache``."""
    return Path(algorithm.log_dir) / "cache" if algorithm.log_dir is not None else None


def config_for_record(algorithm, **resolved: Any) -> Dict[str, Any]:
    """The method's config as a plain dict, with its class name and what the run resolved."""
    from omegaconf import DictConfig, OmegaConf

    config = OmegaConf.to_container(algorithm.config, resolve=True) if isinstance(algorithm.config, DictConfig) else dict(algorithm.config)
    config.update(algorithm=type(algorithm).__name__, **resolved)
    return config


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def scalar_metrics(record: Dict[str, Any]) -> Dict[str, float]:
    """The numeric part of an iteration record, for the Fabric logger (tensorboard)."""
    metrics = {f"fw/{key}": float(record[key]) for key in ("fw_gap", "loss_before", "loss_after", "step_size", "time_s", "time_gradient_s", "time_lmo_s") if isinstance(record.get(key), (int, float))}
    for label, weight in record.get("weights", {}).items():
        metrics[f"fw_weight/{label}"] = float(weight)
    return metrics


def format_merge(weights: Dict[str, float], threshold: float = 5e-4) -> str:
    """'0.41 x gtsrb + 0.22 x dtd + ...' for the non-negligible weights, largest first."""
    terms = sorted(((w, label) for label, w in weights.items() if abs(w) >= threshold), reverse=True)
    return " + ".join(f"{w:.3f} x {label}" for w, label in terms) or "(empty)"


class TrajectoryWriter:
    """Keeps the trajectory file up to date after every iteration (so a crash leaves a record)."""

    def __init__(self, path: Optional[Path], config: Dict[str, Any], plot: bool = True):
        self.path = unused_path(path) if path is not None else None
        self.config = config
        self.plot = plot  # the final write draws the FW picture (not for other methods' records)

    def write(self, trajectory, summary: Optional[Dict[str, Any]] = None) -> None:
        if self.path is None:
            return
        payload = {"config": self.config, "iterations": trajectory}
        if summary is not None:
            payload["summary"] = summary
        write_json_atomic(self.path, payload)
        if summary is not None and self.plot:
            from .trajectory_plot import plot_trajectory

            plot_trajectory(self.path, trajectory, summary)
