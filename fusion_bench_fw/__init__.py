"""FW-Merging (Frank-Wolfe model merging) for FusionBench."""

__version__ = "0.1.0"
