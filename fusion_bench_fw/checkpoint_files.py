"""Where each pool entry's weights lie on disk, decided once per checkpoint before any heavy work.

A FusionBench pool entry is a local model directory, a Hugging Face repo id (``tanganke/clip-vit-
base-patch32_sun397``), or a config whose ``_target_`` is a ``from_pretrained`` with
``pretrained_model_name_or_path`` (and maybe ``revision``). Repo ids resolve through the Hugging Face
cache with ``huggingface_hub.snapshot_download``, as FusionBench's own loader does: from the cache
alone when offline (``HF_HUB_OFFLINE=1``), downloading otherwise. A directory with ``model.safetensors``
or a sharded ``model.safetensors.index.json`` is then read tensor by tensor (the streaming reader);
A LoRA fine-tune listed through FusionBench's ``load_peft_causal_lm`` (or seq2seq ``load_lora_model``) is read as its base model's
safetensors plus the adapter's low-rank factors (:mod:`.lora_adapters`). An OpenCLIP pool's pickled
``ImageEncoder`` is copied once into a safetensors file and streamed from it (:mod:`.openclip_checkpoints`). Anything else (``.bin``
weights, custom loaders, in-memory modules) goes to the pool's ``load_model``, and the log says why,
once per model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from .lora_adapters import PEFT_LOADERS, LoraAdapter, read_adapter
from .safetensors_slices import read_header, stored_prefix

log = logging.getLogger(__name__)

STREAMING = "safetensors"
POOL_LOADER = "pool_loader"
LORA = "lora_adapter"  # base safetensors + a LoRA adapter's factors
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointNotAvailable(FileNotFoundError):
    """A pool entry that is neither on disk nor obtainable (offline and not in the hub cache)."""


@dataclass(frozen=True)
class CheckpointFiles:
    """How one pool entry is read: ``reader`` is STREAMING (``weight_map``: tensor name -> file), LORA
    (``weight_map`` of the base model, plus ``adapter``) or POOL_LOADER (``why`` says why not streamed)."""

    name: str
    reader: str
    source: str
    weight_map: Mapping[str, Path] = field(default_factory=dict)
    why: str = ""
    adapter: Optional[LoraAdapter] = None


def entry_location(entry) -> Tuple[Optional[str], Optional[str], str]:
    """(path or repo id, revision, why not) of a pool entry; a None location means: only the pool can load it."""
    if isinstance(entry, (str, os.PathLike)):
        return os.fspath(entry), None, ""
    if isinstance(entry, Mapping) or hasattr(entry, "keys"):
        target = str(entry.get("_target_", ""))
        location = entry.get("pretrained_model_name_or_path")
        if location is None:
            return None, None, f"its config has no pretrained_model_name_or_path (_target_ {target or 'none'})"
        if target and not target.endswith("from_pretrained"):
            return None, None, f"its _target_ {target} is a custom loader that may transform the weights"
        return str(location), entry.get("revision"), ""
    return None, None, f"it is a {type(entry).__name__}, not a path or repo id"


def hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _looks_like_repo_id(location: str) -> bool:
    return not location.startswith(("/", ".", "~")) and location.count("/") <= 1 and bool(location.strip("/"))


def local_directory(label: str, location: str, revision: Optional[str] = None) -> Path:
    """The local directory of an entry (``label`` names it in errors, e.g. "model 'sun397'"): the
    path itself, or the repo's snapshot in the Hugging Face cache."""
    path = Path(location).expanduser()
    if path.exists():
        return path
    if not _looks_like_repo_id(location):
        raise CheckpointNotAvailable(f"{label}: {location} does not exist; fix the path in the pool config")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = hub_offline()
    source = location + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(location, revision=revision, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        if offline or isinstance(error, LocalEntryNotFoundError):
            raise CheckpointNotAvailable(
                f"{label}: {source} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
                f"is offline{' (HF_HUB_OFFLINE=1)' if offline else ''}. Fix: run once online, or `huggingface-cli download {location}`"
                f"{f' --revision {revision}' if revision else ''}, or point HF_HOME at a cache that holds it "
                f"(`fusion_bench_fw hub-standin`), or use the offline mini pool (modelpool=mini-clip_TA20)."
            ) from None
        raise CheckpointNotAvailable(f"{label}: could not download {source} from the Hugging Face hub: {error}") from None


def safetensors_weight_map(directory: Path) -> Tuple[Dict[str, Path], str]:
    """(tensor name -> file, why not) for a directory with one safetensors file or a sharded index."""
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    if single.is_file():
        return {tensor: single for tensor in read_header(single)}, ""
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = {shard: directory / shard for shard in set(weight_map.values())}
        missing = sorted(shard for shard, path in files.items() if not path.is_file())
        if missing:
            raise CheckpointNotAvailable(f"{index} names shards that are not on disk: {', '.join(missing)} (an interrupted download? fetch the repo again)")
        return {tensor: files[shard] for tensor, shard in weight_map.items()}, ""
    return {}, f"{directory} has no {SINGLE_FILE} or {INDEX_FILE}"


def _peft_entry(entry) -> bool:
    return (isinstance(entry, Mapping) or hasattr(entry, "keys")) and str(entry.get("_target_", "")).endswith(PEFT_LOADERS)


def resolve_lora(name: str, entry, streaming: bool = True) -> CheckpointFiles:
    """A LoRA entry (``load_peft_causal_lm``, ``load_lora_model``): its base model's files and its adapter, both resolved now."""
    base_location, adapter_location = entry.get("base_model_path"), entry.get("peft_model_path")
    if base_location is None or adapter_location is None:
        return CheckpointFiles(name, POOL_LOADER, repr(entry), why=f"its {entry.get('_target_')} config lacks base_model_path or peft_model_path")
    source = f"{base_location} + LoRA {adapter_location}"
    base = local_directory(f"model {name!r} (its base_model_path)", str(base_location))
    adapter_dir = local_directory(f"model {name!r} (its peft_model_path)", str(adapter_location))
    if not streaming:
        return CheckpointFiles(name, POOL_LOADER, source, why="method.stream_safetensors=false")
    weight_map, why = safetensors_weight_map(base)
    adapter, adapter_why = read_adapter(adapter_dir) if weight_map else (None, "")
    if adapter is None:
        return CheckpointFiles(name, POOL_LOADER, source, why=why or adapter_why)
    return CheckpointFiles(name, LORA, source, weight_map, adapter=adapter)


def resolve_openclip(name: str, entry, streaming: bool = True) -> CheckpointFiles:
    """An OpenCLIP pool entry: a pickle (or state dict) file, streamed from its safetensors copy."""
    from .openclip_checkpoints import pickle_entry, safetensors_copy

    found = pickle_entry(entry)
    if found is None:
        return CheckpointFiles(name, POOL_LOADER, repr(entry), why="it is not a pickle path or model_name + pickle_path/state_dict_path")
    path = found[0]
    if not path.is_file():
        raise CheckpointNotAvailable(f"model {name!r}: {path} does not exist; fix the path in the pool config (its model_dir)")
    if not streaming:
        return CheckpointFiles(name, POOL_LOADER, str(path), why="method.stream_safetensors=false")
    copy = safetensors_copy(f"model {name!r}", path)
    return CheckpointFiles(name, STREAMING, str(path), {tensor: copy for tensor in read_header(copy)})


def is_openclip_pool(modelpool) -> bool:
    """Whether ``modelpool`` is (a subclass of) FusionBench's OpenCLIPVisionModelPool, told by its
    class hierarchy so that other pools never import open_clip."""
    return any(c.__name__ == "OpenCLIPVisionModelPool" and c.__module__.startswith("fusion_bench.modelpool") for c in type(modelpool).__mro__)


def resolve_checkpoint(name: str, entry, streaming: bool = True) -> CheckpointFiles:
    if _peft_entry(entry):
        return resolve_lora(name, entry, streaming)
    location, revision, why = entry_location(entry)
    if location is None:
        return CheckpointFiles(name, POOL_LOADER, repr(entry), why=why)
    source = location + (f"@{revision}" if revision else "")
    directory = local_directory(f"model {name!r}", location, revision)
    if not streaming:
        return CheckpointFiles(name, POOL_LOADER, source, why="method.stream_safetensors=false")
    weight_map, why = safetensors_weight_map(directory)
    if not weight_map:
        return CheckpointFiles(name, POOL_LOADER, source, why=why)
    return CheckpointFiles(name, STREAMING, source, weight_map)


def resolve_pool(modelpool, names: Sequence[str], streaming: bool = True) -> Dict[str, CheckpointFiles]:
    """Every named entry of the pool, resolved; one log line per entry the streaming reader cannot serve."""
    entries = getattr(modelpool, "_models", {})
    resolve = resolve_openclip if is_openclip_pool(modelpool) else resolve_checkpoint
    resolved = {name: resolve(name, entries.get(name), streaming) for name in names}
    for item in resolved.values():
        if item.reader == POOL_LOADER:
            log.info("model %r is loaded whole by the pool's load_model, not streamed: %s", item.name, item.why)
    return resolved


def stored_dtype(files: CheckpointFiles, names: Sequence[str]):
    """The one dtype a streamed checkpoint stores ``names`` in (its safetensors headers), or None
    (not streamed, names not all found, or mixed dtypes)."""
    if files.reader != STREAMING or not names:
        return None
    headers = {path: read_header(path) for path in set(files.weight_map.values())}
    entries = {tensor: headers[path][tensor] for tensor, path in files.weight_map.items() if tensor in headers[path]}
    prefix = stored_prefix(entries.keys(), names)
    if prefix is None:
        return None
    dtypes = {entries[prefix + name].dtype for name in names}
    return dtypes.pop() if len(dtypes) == 1 else None


def reader_counts(resolved: Mapping[str, CheckpointFiles]) -> Dict[str, int]:
    """Checkpoints per reader; the LoRA reader is listed only for pools that use it."""
    counts = {STREAMING: 0, POOL_LOADER: 0, LORA: 0}
    for item in resolved.values():
        counts[item.reader] += 1
    if not counts[LORA]:
        del counts[LORA]
    return counts
