"""Offline mini GLUE pool: synthetic sentence / sentence-pair classification tasks for tiny GPT-2 models."""
