"""Offline mini-TA20 benchmark pool: a tiny CLIP, 20 synthetic tasks, 20 fine-tuned towers.

`ensure_built(variant, seed)` builds (once, cached) and returns the build directory;
`MiniCLIPVisionModelPool` / `MiniCLIPVisionModelTaskPool` expose it to FusionBench. The pool
classes (which import fusion-bench) load lazily, so a cache lookup stays a light import.
"""

from importlib import import_module

from .cache import CACHE_ENV_VAR, cache_root, ensure_built, is_complete
from .manifest import Manifest, load_manifest
from .variants import BUILDER_VERSION, VARIANTS

_LAZY = {
    "MiniCLIPVisionModelPool": "pools",
    "MiniCLIPVisionModelTaskPool": "pools",
    "select_tasks": "pools",
    "register_tasks": "registry",
}

__all__ = [
    "BUILDER_VERSION",
    "CACHE_ENV_VAR",
    "VARIANTS",
    "Manifest",
    "cache_root",
    "ensure_built",
    "is_complete",
    "load_manifest",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
