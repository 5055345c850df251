"""Before any data work: validate every checkpoint and screen out those that are not fine-tunes of θ0.

A fine-tune stays close to its base (||theta_i - theta_0|| / ||theta_0|| is a few percent to tens
of percent); a checkpoint of another initialization (random weights, another pretraining) sits at
~1.4. Its huge linear term can win the LMO, and a small step toward it can even lower the objective
the way weight decay does, while it carries nothing of theta_0's features; the descent probe cannot
tell that apart, the distance can.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional

import torch

from .checkpoints import PoolCheckpoints
from .frank_wolfe.params import ParamDict

log = logging.getLogger(__name__)


def measure_distances(source: PoolCheckpoints, theta0: ParamDict, shard=(0, 1), all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, float]:
    """Each process validates its share of the checkpoints (names, shapes, finite values) and
    measures their relative distances from theta_0; all processes stop if any share is bad (a lone
    failing process would leave the others waiting in the next collective)."""
    error: Optional[ValueError] = None
    distances = torch.zeros(len(source.names), dtype=torch.float64)
    try:
        distances = source.validate(theta0, shard=shard)
    except ValueError as caught:
        error = caught
    reduce = all_reduce or (lambda tensor: tensor)
    combined = reduce(torch.cat([torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64), distances]))
    if error is not None:
        raise error
    if combined[0].item() > 0:
        raise ValueError("checkpoint validation failed in another process; its error message names the model")
    return dict(zip(source.names, combined[1:].tolist()))


def screen(distances: Dict[str, float], limit: Optional[float]) -> List[str]:
    """Names of the checkpoints farther than ``limit`` x ||theta_0|| from theta_0, logged one by one;
    an error if that is every checkpoint (then the pool's base is probably the wrong model)."""
    if limit is None:
        return []
    screened = [name for name, distance in distances.items() if distance > limit]
    if screened and len(screened) == len(distances):
        raise ValueError(
            f"every checkpoint is farther than max_relative_distance={limit:g} from the pretrained model "
            f"({', '.join(f'{n}: {distances[n]:.3f}' for n in screened)}): check that the pool's _pretrained_ "
            f"entry is the base these models were fine-tuned from, or raise method.max_relative_distance"
        )
    for name in screened:
        log.warning(
            "model %r is screened out: its distance from the pretrained model is %.3f x the pretrained "
            "model's norm (> max_relative_distance=%g), so it is not a fine-tune of it. Set "
            "method.max_relative_distance=null (or higher) to offer it to the LMO anyway.", name, distances[name], limit,
        )
    return screened
