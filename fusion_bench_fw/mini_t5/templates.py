"""Mini GLUE rows as text-to-text pairs, in the original T5 GLUE format.

The input is the task's name, then each text column as ``<column>: <text>`` (T5's ``rte sentence1:
... sentence2: ...``); the target is the label's name (``entailment``, ``not_duplicate``), the words
a text-to-text model must generate. FusionBench's flan-T5 GLUE loader writes its rows the same way,
with Flan's question templates and yes/no targets instead.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from ..mini_glue.tasks import get_task


def text_pair(task: str, row: Mapping) -> Tuple[str, str]:
    """(input_text, target_text) of one mini GLUE row of ``task``."""
    spec = get_task(task)
    source = " ".join([spec.name] + [f"{column}: {row[column]}" for column in spec.columns])
    return source, spec.label_names[int(row["label"])]
