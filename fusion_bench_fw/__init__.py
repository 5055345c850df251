"""FW-Merging (Frank-Wolfe model merging, arXiv 2503.12649) for FusionBench.

``from fusion_bench_fw import FWHard, FWSoft, DFMerge`` loads the FusionBench adapters lazily, so that the
Hydra plugin (which imports this package to locate its configs) stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["FWHard", "FWSoft", "DFMerge"]


def __getattr__(name):
    if name == "DFMerge":
        from .baselines.df_merge import DFMerge

        return DFMerge
    if name in __all__:
        from . import algorithms

        return getattr(algorithms, name)
    raise AttributeError(f"module 'fusion_bench_fw' has no attribute {name!r}")
