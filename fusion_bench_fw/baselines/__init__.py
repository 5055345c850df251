"""Baselines run as the paper ran them: FusionBench's methods, restricted where fairness needs it."""
