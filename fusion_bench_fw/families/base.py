"""The model-family seam: what FW-Merging needs to know about one kind of FusionBench model pool.

FWHard and FWSoft hold no model-specific code. For a pool they ask its family (``family_for``):
how to load the base model, which of its parameters are merged (the rest, e.g. per-task heads,
stay as they are), which tasks have data for a loss, how to turn samples of a task into batches and
a batch into a loss, and what model to hand back to FusionBench's taskpool. Adding a family (causal
LMs, OpenCLIP, text classifiers) means adding one subclass and registering it in ``__init__.py``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..frank_wolfe.params import ParamDict
from ..objective import BatchLoss, BatchLosses, TaskBatches

log = logging.getLogger(__name__)


class ModelFamily(ABC):
    """One kind of model pool. Built once per run with the pool and the run's Fabric."""

    name: ClassVar[str]
    description: ClassVar[str]  # the pools it handles, in a few words (for error messages)
    losses: ClassVar[Tuple[str, ...]]  # objective losses this family computes; the first is the default
    # the split each loss reads its samples from (labelled train samples, or unlabelled test ones)
    loss_splits: ClassVar[Mapping[str, str]] = {"cross_entropy": "train", "entropy": "test"}

    def __init__(self, modelpool, fabric, cache_dir: Optional[Path] = None):
        self.modelpool = modelpool
        self.fabric = fabric
        self.cache_dir = cache_dir  # where the family may cache derived artefacts of this run

    @classmethod
    @abstractmethod
    def accepts(cls, modelpool) -> bool:
        """Whether this family handles ``modelpool``."""

    def check_entries_available(self) -> None:
        """Fail now, naming the entry and the fix, if something the family loads by name besides the
        pool's models (a processor, a tokenizer) is neither on disk nor obtainable from the hub."""

    def load_base(self) -> nn.Module:
        """The pretrained model, frozen, in eval mode, on the Fabric device: the merge is written into it."""
        model = self.modelpool.load_pretrained_model()
        model.requires_grad_(False).eval()
        return self.fabric.to_device(model)

    def merged_parameters(self, model: nn.Module) -> List[str]:
        """Names (as in ``model.named_parameters()``) of the parameters FW merges; all by default."""
        return [name for name, _ in model.named_parameters()]

    def tasks_with_data(self, loss: str) -> List[str]:
        """Pool tasks that have samples for ``loss`` (its split, see ``loss_splits``)."""
        split = self.loss_splits[loss]
        names = self.modelpool.train_dataset_names if split == "train" else self.modelpool.test_dataset_names
        return list(names)

    @staticmethod
    def taskpool_tasks(taskpool) -> Optional[List[str]]:
        """The tasks a FusionBench taskpool evaluates (its ``test_datasets`` argument), or None.

        Read through the taskpool's ``_config_mapping`` (FusionBench's map from config keys to the
        attributes holding them, what its ``.config`` is built from): a taskpool sets its datasets up
        lazily, and a subclass may report another ``.config`` (the mini pools report their own
        constructor arguments); a taskpool without the mapping, by the ``_test_datasets`` attribute
        FusionBench's taskpools store the argument in."""
        mapping = getattr(type(taskpool), "_config_mapping", None)
        attribute = mapping.inverse.get("test_datasets") if hasattr(mapping, "inverse") else None
        # FusionBench's OpenCLIP taskpool keeps its argument in ``_test_datasets`` without mapping it
        datasets = getattr(taskpool, attribute or "_test_datasets", None)
        return [str(name) for name in datasets.keys()] if datasets else None

    def load_split(self, task: str, loss: str):
        """The pool's dataset of ``task`` that ``loss`` reads (its split, see ``loss_splits``)."""
        return self.modelpool.load_train_dataset(task) if self.loss_splits[loss] == "train" else self.modelpool.load_test_dataset(task)

    @staticmethod
    def sample_count(task: str, available: int, count: Optional[int]) -> int:
        """How many samples to draw: ``count``, or the whole split for None; a split smaller than
        ``count`` is used whole, with a warning."""
        if count is None:
            return available
        if count > available:
            log.warning("task %s has only %d samples (< samples_per_task=%d): using all of them", task, available, count)
        return count

    def prepare(self, model: nn.Module, tasks: Sequence[str]) -> None:
        """Set up what the loss of these tasks needs besides the merged parameters (e.g. heads)."""

    @abstractmethod
    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        """``count`` samples of ``task`` (drawn with ``seed``; None = the whole split), this process's share, in batches."""

    @abstractmethod
    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        """``f(params, task, batch)``: the summed loss of a batch, with ``params`` replacing the
        merged parameters of ``model`` (``torch.func.functional_call``, no copy into the module)."""

    def batch_losses(self, model: nn.Module, loss: str) -> Optional[BatchLosses]:
        """``f(params, [(task, batch), ...])``: each batch's summed loss, from one forward pass over
        all of them, for families whose tasks share the merged network and differ only in a head.
        None (the default): the objective evaluates one batch per pass."""
        return None

    def batch_correct(self, model: nn.Module) -> Callable[[Mapping[str, torch.Tensor], str, Any], int]:
        """``f(params, task, batch)``: how many of a labelled batch's samples the model with ``params``
        classifies right (DF-Merge's validation score). Families without a notion of accuracy
        leave it out, and the methods that need it say so."""
        raise NotImplementedError(f"the {self.name} model family defines no validation accuracy (ModelFamily.batch_correct)")

    def read_merged_checkpoint(self, path: Path, model: nn.Module, block_names: Sequence[str]) -> ParamDict:
        """Parameters of a merged checkpoint on disk (``init=<dir>``), by the base model's own class."""
        return self.matching_parameters(path, dict(type(model).from_pretrained(str(path)).named_parameters()), model, block_names)

    @staticmethod
    def matching_parameters(path, params: Mapping[str, torch.Tensor], model: nn.Module, block_names: Sequence[str]) -> ParamDict:
        """``params`` (read from the checkpoint at ``path``) for the merged blocks, on the base model's
        device and dtype; a missing block or another shape is refused, naming the parameter."""
        base = dict(model.named_parameters())
        for name in block_names:
            if name not in params or params[name].shape != base[name].shape:
                raise ValueError(f"init checkpoint {str(path)!r} does not match the pretrained architecture (parameter {name!r})")
        return {name: params[name].detach().to(device=base[name].device, dtype=base[name].dtype).clone() for name in block_names}

    def merged_model(self, model: nn.Module, theta: Mapping[str, torch.Tensor]) -> nn.Module:
        """The model FusionBench evaluates and saves: the base with the merged parameters written in."""
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in theta:
                    parameter.copy_(theta[name])
        return model
