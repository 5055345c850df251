"""The build directory's `manifest.json`: what was built, where, and with which builder.

Paths are stored relative to the build directory (so a cache can be moved) and resolved to
absolute paths on load. `_name_or_path` of the loaded models is then the absolute path, which
is unique per builder version and seed because the build directory's name carries both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

MANIFEST_FILE = "manifest.json"


@dataclass
class Manifest:
    builder_version: int
    variant: str
    seed: int
    tasks: List[str]  # fixed order, eval tasks first
    eval_tasks: List[str]
    pretrained_dir: str  # full CLIPModel + processor files
    processor_dir: str
    models: Dict[str, str]  # task -> fine-tuned CLIPVisionModel dir
    datasets: Dict[str, Dict[str, str]]  # task -> {"train": dir, "test": dir}
    classnames: Dict[str, List[str]]
    templates: Dict[str, List[str]]  # format strings with a `{c}` slot
    card: str = "card.json"

    def save(self, build_dir: Path) -> None:
        (Path(build_dir) / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, build_dir: Path, absolute: bool = True) -> "Manifest":
        build_dir = Path(build_dir)
        m = cls(**json.loads((build_dir / MANIFEST_FILE).read_text()))
        return m.resolved(build_dir) if absolute else m

    def resolved(self, build_dir: Path) -> "Manifest":
        """A copy whose paths are absolute under `build_dir`."""
        root = Path(build_dir).resolve()
        r = lambda p: str(root / p)  # noqa: E731
        return Manifest(
            **{
                **asdict(self),
                "pretrained_dir": r(self.pretrained_dir),
                "processor_dir": r(self.processor_dir),
                "models": {t: r(p) for t, p in self.models.items()},
                "datasets": {t: {s: r(p) for s, p in d.items()} for t, d in self.datasets.items()},
                "card": r(self.card),
            }
        )

    def all_paths(self) -> List[str]:
        paths = [self.pretrained_dir, self.processor_dir, self.card, *self.models.values()]
        for d in self.datasets.values():
            paths.extend(d.values())
        return paths


def load_manifest(build_dir) -> Manifest:
    """The manifest of a finished build with absolute paths."""
    return Manifest.load(Path(build_dir))
