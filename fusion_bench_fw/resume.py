"""Resumable FW runs: the solver state after every iteration, saved atomically.

What fully determines the rest of a run is theta_t, its convex weights, the iteration counter and
the trajectory so far: the objective's samples are drawn from the configured seed and FW-soft
re-initializes its coefficients every iteration, so no other RNG state is carried. Weights go to a
safetensors file, everything else to ``state.json``, written last and holding the safetensors
file's SHA-256 - so a crash mid-write leaves either the previous complete state or a detectable
mismatch, never a silently mixed one. A ``fingerprint`` of the configuration and pool guards
against resuming someone else's run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from .frank_wolfe.solver import SolverState
from .trajectory import write_json_atomic

STATE_FILE = "state.json"
TENSORS_FILE = "state.safetensors"
WEIGHTS_KEY = "__fw_weights__"


class ResumeError(RuntimeError):
    pass


def fingerprint(payload: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RunCheckpoint:
    def __init__(self, directory: Path, run_fingerprint: str):
        self.directory = Path(directory).expanduser()
        self.run_fingerprint = run_fingerprint

    def save(self, state: SolverState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.theta.items()}
        tensors[WEIGHTS_KEY] = state.weights.contiguous()
        tmp = self.directory / f".{TENSORS_FILE}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, self.directory / TENSORS_FILE)
        write_json_atomic(
            self.directory / STATE_FILE,
            {
                "fingerprint": self.run_fingerprint,
                "iteration": state.iteration,
                "weights_exact": state.weights_exact,
                "stop_reason": state.stop_reason,
                "trajectory": state.trajectory,
                "tensors_sha256": _sha256(self.directory / TENSORS_FILE),
            },
        )

    def load(self, device: torch.device) -> Optional[SolverState]:
        """The saved state, ``None`` if there is none; raises ResumeError if it cannot be trusted."""
        state_path = self.directory / STATE_FILE
        tensors_path = self.directory / TENSORS_FILE
        if not state_path.exists():
            return None
        try:
            meta = json.loads(state_path.read_text())
        except json.JSONDecodeError as error:
            raise ResumeError(f"resume state {state_path} is corrupt ({error}); delete {self.directory} to start over") from error
        if meta.get("fingerprint") != self.run_fingerprint:
            raise ResumeError(
                f"resume state in {self.directory} was written by a different configuration or model pool; "
                f"refusing to mix runs. Use another method.checkpoint_dir, or delete that directory to start over"
            )
        if not tensors_path.exists() or _sha256(tensors_path) != meta.get("tensors_sha256"):
            raise ResumeError(f"resume state in {self.directory} is incomplete or corrupt (tensor file missing or checksum mismatch); delete it to start over")
        tensors = load_file(str(tensors_path))
        weights = tensors.pop(WEIGHTS_KEY)
        return SolverState(
            theta={name: t.to(device) for name, t in tensors.items()},
            weights=weights,
            weights_exact=bool(meta["weights_exact"]),
            iteration=int(meta["iteration"]),
            trajectory=list(meta["trajectory"]),
            stop_reason=None,
        )
