"""Teach FusionBench's CLIP template factory the mini pool's class names and prompts.

Every FusionBench CLIP method and the CLIP taskpool look class names and templates up with
`get_classnames_and_templates(task)`, so they must be registered before anything asks for a
zero-shot head; the mini pool and taskpool call `register_tasks` in their constructors.
"""

from __future__ import annotations

from typing import Dict, List

from fusion_bench.tasks.clip_classification import CLIPTemplateFactory

from .tasks import format_template

_OWNER_KEY = "fusion_bench_fw_mini"  # marks entries we wrote, so we may overwrite them


def register_tasks(classnames: Dict[str, List[str]], templates: Dict[str, List[str]]) -> None:
    """Register each task's class names and prompt templates (format strings with `{c}`).

    fusion-bench 0.2.33 bug worked around here: `CLIPTemplateFactory.register_dataset` asserts the
    opposite of what it means and stores the templates under the misspelt key 'temolates'. We write
    the dict form that `get_classnames_and_templates` reads ({"classnames": [...], "templates":
    [...]}, no "module" key) straight into `_dataset_mapping`.
    """
    mapping = CLIPTemplateFactory._dataset_mapping
    for task, names in classnames.items():
        existing = mapping.get(task)
        if existing is not None and not (isinstance(existing, dict) and existing.get(_OWNER_KEY)):
            raise ValueError(f"mini task name {task!r} clashes with a FusionBench dataset")
        mapping[task] = {
            "classnames": list(names),
            "templates": [format_template(t) for t in templates[task]],
            _OWNER_KEY: True,
        }
