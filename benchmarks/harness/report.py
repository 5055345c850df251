"""Cells, medians, markdown tables and result files, the same way in every report.

Result JSON is compact: one line per row of a list of rows, everything else on one line per
top-level key, so a file stays small and a diff shows which rows changed.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

GB = 1024**3


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cell(values: Iterable[Optional[float]], digits: int = 1, scale: float = 1.0) -> str:
    """'median' for one value, 'median [min–max] ×count' for several, '–' for none."""
    present = [v / scale for v in values if v is not None]
    if not present:
        return "–"
    middle = f"{statistics.median(present):.{digits}f}"
    if len(present) == 1:
        return middle
    return f"{middle} [{min(present):.{digits}f}–{max(present):.{digits}f}] ×{len(present)}"


def digits_for(values: Iterable[Optional[float]], significant: int = 3) -> int:
    """Decimals that give the smallest value ``significant`` digits (1.50 s → 2, 13.4 s → 1)."""
    present = [abs(v) for v in values if v]
    if not present:
        return 1
    return max(0, significant - 1 - math.floor(math.log10(min(present))))


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator is not None and denominator else None


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def verdict(value: Optional[float], limit: float) -> str:
    return "n/a" if value is None else ("PASS" if value <= limit else "MISS")


def dumps(payload: Dict[str, Any]) -> str:
    """JSON with one line per top-level key and one line per row of a list of dicts."""
    items = []
    for key, value in payload.items():
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            body = "[\n" + ",\n".join("  " + json.dumps(row, default=str) for row in value) + "\n ]"
        else:
            body = json.dumps(value, default=str)
        items.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(items) + "\n}\n"


def write_json(path: Path, payload: Dict[str, Any]) -> None:
    """Atomically (a half-written file never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(payload))
    tmp.replace(path)


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
