"""OpenCLIP task-vector checkpoints: the ``ImageEncoder`` pickles of the task-arithmetic papers.

A FusionBench ``OpenCLIPVisionModelPool`` entry is a pickle path (a whole pickled ``ImageEncoder``,
the original task-vectors layout ``<model>/zeroshot.pt``, ``<model>/<Task>/finetuned.pt``), or
``{model_name, pickle_path}``, or ``{model_name, state_dict_path}``. Two things in FusionBench 0.2.33
stop these from loading, and this module works around both without editing FusionBench:

* it calls ``torch.load(..., weights_only=True)`` and falls back only on ``RuntimeError``, but a
  pickled module makes torch raise ``pickle.UnpicklingError``, so no whole-module pickle loads;
* for ``{model_name, ...}`` it builds ``ImageEncoder(model_name)``, which downloads the ``openai``
  weights (and accepts only ViT-B-32/B-16/L-14) just to overwrite them with the state dict.

(A third one: its pool module imports ``typing.override``, new in Python 3.12, so on 3.11 it does not
import at all; :func:`allow_fusion_bench_openclip_import` supplies it from ``typing_extensions``.)

Here pickles are read with ``weights_only=False`` - they execute code, so only load checkpoints you
trust, as with FusionBench's own fallback - and encoders are built with ``pretrained=None``. For
streaming, each checkpoint's tensors are copied once into a safetensors file in our cache (keyed by
the pickle's path, size and modification time), which the safetensors readers then serve tensor by
tensor like any Hugging Face checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import typing
from pathlib import Path
from typing import Mapping, Optional, Tuple

import torch
from torch import nn

log = logging.getLogger(__name__)



def allow_fusion_bench_openclip_import() -> None:
    """FusionBench 0.2.33 workaround: ``fusion_bench.modelpool.openclip_vision.modelpool`` does
    ``from typing import override`` (Python >= 3.12). On older Pythons, give ``typing`` the same
    decorator from ``typing_extensions`` (a no-op marker) before anything imports that module."""
    if not hasattr(typing, "override"):
        import typing_extensions

        typing.override = typing_extensions.override


allow_fusion_bench_openclip_import()

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin")
CACHE_SUBDIR = "openclip-safetensors"


def pickle_entry(entry) -> Optional[Tuple[Path, str, Optional[str]]]:
    """(file, kind, model_name) of an OpenCLIP pool entry, kind "module" (a pickled encoder, loaded
    as it is), "pickle" (a pickled encoder whose weights go into a fresh one) or "state_dict"; None
    for entries this module does not read (configs FusionBench instantiates)."""
    if isinstance(entry, (str, os.PathLike)):
        path = Path(os.fspath(entry)).expanduser()
        return (path, "module", None) if path.suffix in PICKLE_SUFFIXES else None
    if isinstance(entry, Mapping) or hasattr(entry, "keys"):
        keys = set(entry.keys())
        for field, kind in (("pickle_path", "pickle"), ("state_dict_path", "state_dict")):
            if keys == {"model_name", field}:
                return Path(str(entry[field])).expanduser(), kind, str(entry["model_name"])
    return None


def _redirect_task_vector_modules() -> None:
    """Real task-vector pickles name ``src.modeling.ImageEncoder`` and old open_clip classes;
    FusionBench maps those names onto its own modules (its helper, called before unpickling)."""
    from fusion_bench.modelpool.openclip_vision.modelpool import _check_and_redirect_open_clip_modeling

    _check_and_redirect_open_clip_modeling()


def read_pickle(path: Path):
    """What ``torch.load`` finds in ``path``: a module or a state dict (on the CPU)."""
    _redirect_task_vector_modules()
    # weights_only=False: a pickled ImageEncoder is a module, which the weights-only unpickler refuses
    return torch.load(str(path), map_location="cpu", weights_only=False, mmap=_is_zip(path))


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"PK"  # torch.save's zip format can be memory-mapped; legacy pickles cannot


def state_dict_of(obj, label: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(f"{label}: holds a {type(obj).__name__}, not an OpenCLIP ImageEncoder or its state dict")


def build_image_encoder(model_name: str) -> nn.Module:
    """FusionBench's ``ImageEncoder`` for an open_clip architecture name, randomly initialised:
    no ``pretrained="openai"`` download, and any name open_clip knows (including configs registered
    with ``open_clip.add_model_config``, as the mini pool does), not only FusionBench's three."""
    import open_clip
    from fusion_bench.models.open_clip import ImageEncoder
    from fusion_bench.models.open_clip.variables_and_paths import MODELS

    if model_name not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {model_name!r}; known: {', '.join(open_clip.list_models()[:8])}, ...")
    encoder = ImageEncoder.__new__(ImageEncoder)  # its __init__ would check the name and download weights
    nn.Module.__init__(encoder)
    # ImageEncoder(name) means OpenAI's weights, which open_clip builds with QuickGELU: same architecture here
    encoder.model, encoder.train_preprocess, encoder.val_preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=None, force_quick_gelu=model_name in MODELS)
    encoder.cache_dir = None
    if hasattr(encoder.model, "transformer"):  # as ImageEncoder(keep_lang=False): the text tower is dropped
        delattr(encoder.model, "transformer")
    return encoder


def load_image_encoder(label: str, entry) -> nn.Module:
    """The ``ImageEncoder`` of a pool entry, as FusionBench's ``load_model`` means it, minus its bugs.

    A pickled encoder is used as it was pickled (its own architecture, QuickGELU or not); FusionBench
    would copy its weights into a freshly downloaded one. A state dict goes into ``build_image_encoder``."""
    found = pickle_entry(entry)
    if found is None:
        raise ValueError(f"{label}: {entry!r} is not an OpenCLIP checkpoint entry (a pickle path, or model_name + pickle_path/state_dict_path)")
    path, kind, model_name = found
    if not path.is_file():
        raise FileNotFoundError(f"{label}: checkpoint {path} does not exist; fix the path in the pool config (model_dir)")
    obj = read_pickle(path) if kind != "state_dict" else torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, nn.Module):
        return obj
    if kind == "module":
        raise ValueError(f"{label}: {path} holds a {type(obj).__name__}, not a pickled ImageEncoder; list it as {{model_name, state_dict_path}}")
    encoder = build_image_encoder(model_name)
    encoder.load_state_dict(state_dict_of(obj, f"{label} ({path})"))
    return encoder


def cache_directory() -> Path:
    from .mini.cache import cache_root

    return cache_root() / CACHE_SUBDIR


def safetensors_copy(label: str, path: Path, cache_dir: Optional[Path] = None) -> Path:
    """A safetensors file with the tensors of the checkpoint at ``path``, written on first use.

    Keyed by the resolved path, size and modification time, so an edited checkpoint gets a new copy;
    written to a temporary name and renamed, so an interrupted copy is never read."""
    path = path.resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    directory = Path(cache_dir) if cache_dir is not None else cache_directory()
    target = directory / f"{path.parent.name}-{path.stem}-{key}.safetensors"
    if target.is_file():
        return target
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    obj = read_pickle(path)
    state = {name: tensor.detach().contiguous() for name, tensor in state_dict_of(obj, f"{label} ({path})").items()}
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file(state, str(temporary), metadata={"source": str(path)})
    os.replace(temporary, target)
    log.info("%s: copied %s to %s for streaming (once per checkpoint)", label, path, target)
    del obj, state
    return target
