"""The mini LLM build's ``manifest.json``: what was built where (paths relative to the build directory)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

MANIFEST_FILE = "manifest.json"


@dataclass
class LLMManifest:
    builder_version: int
    variant: str
    seed: int
    tasks: List[str]  # fixed order, eval tasks first
    eval_tasks: List[str]
    base_dir: str  # the pretrained LlamaForCausalLM
    tokenizer_dir: str
    models: Dict[str, str]  # task -> full fine-tune dir
    adapters: Dict[str, str]  # task -> LoRA adapter dir (PEFT layout)
    datasets: Dict[str, Dict[str, str]]  # task -> {"train": dir, "test": dir}
    card: str = "card.json"

    def save(self, build_dir: Path) -> None:
        (Path(build_dir) / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, build_dir: Path) -> "LLMManifest":
        """The manifest with absolute paths under ``build_dir``."""
        root = Path(build_dir).resolve()
        m = cls(**json.loads((root / MANIFEST_FILE).read_text()))
        r = lambda p: str(root / p)  # noqa: E731
        return cls(**{**asdict(m), "base_dir": r(m.base_dir), "tokenizer_dir": r(m.tokenizer_dir), "card": r(m.card),
                      "models": {t: r(p) for t, p in m.models.items()}, "adapters": {t: r(p) for t, p in m.adapters.items()},
                      "datasets": {t: {s: r(p) for s, p in d.items()} for t, d in m.datasets.items()}})

    def all_paths(self) -> List[str]:
        paths = [self.base_dir, self.tokenizer_dir, self.card, *self.models.values(), *self.adapters.values()]
        return paths + [p for d in self.datasets.values() for p in d.values()]
