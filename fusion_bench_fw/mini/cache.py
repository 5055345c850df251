"""Where built pools live, and how a build is published so that a cache is never half-trusted.

Layout: `<root>/<variant>-v<BUILDER_VERSION>-seed<seed>/`, root = `$FUSION_BENCH_FW_CACHE` or
`~/.cache/fusion_bench_fw/mini`. A build goes into a `.partial-*` sibling, gets its manifest and a
`COMPLETE` marker (naming version, variant and seed) last, and is renamed into place. A directory
without a matching marker and manifest (an interrupted or foreign build) is removed and rebuilt.
An exclusive file lock per build name stops two processes from building the same pool at once;
the second waits and then reuses the first one's result.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .manifest import Manifest
from .variants import BUILDER_VERSION, get_variant

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "FUSION_BENCH_FW_CACHE"
COMPLETE_MARKER = "COMPLETE"


def cache_root(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fusion_bench_fw" / "mini"


def build_name(variant: str, seed: int, version: int = BUILDER_VERSION) -> str:
    return f"{variant}-v{version}-seed{seed}"


def _marker(variant: str, seed: int, version: int) -> dict:
    return {"builder_version": version, "variant": variant, "seed": seed}


def is_complete_marker(path: Path, marker: dict) -> bool:
    """Whether ``path`` carries exactly this ``COMPLETE`` marker (written last by ``publish_build``)."""
    try:
        return json.loads((path / COMPLETE_MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False


def is_complete(path: Path, variant: str, seed: int, version: int = BUILDER_VERSION) -> bool:
    """True only for a finished build of exactly this builder version, variant and seed."""
    if not is_complete_marker(path, _marker(variant, seed, version)):
        return False
    try:
        m = Manifest.load(path)
    except (OSError, ValueError, TypeError):
        return False
    if (m.builder_version, m.variant, m.seed) != (version, variant, seed):
        return False
    return all(Path(p).exists() for p in m.all_paths())


try:
    import fcntl
except ImportError:  # no flock (Windows): builds are still atomic, just not serialised
    fcntl = None


@contextmanager
def _exclusive(lock_path: Path, blocking: bool = True):
    """Hold an exclusive advisory lock (POSIX flock, released by the OS if the holder dies).

    Yields whether the lock is held (always True when blocking)."""
    if fcntl is None:
        yield blocking
        return
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_dead_partials(root: Path, own_name: str) -> None:
    """Delete `.partial-*` directories left by killed builds. Call with own_name's lock held.

    A partial of our own build name is dead because we hold its lock; one of another name is dead
    if its lock can be taken at once (its builder would hold it)."""
    for partial in root.glob(".partial-*"):
        name = partial.name[len(".partial-"):].rsplit("-", 2)[0]  # strip "-<pid>-<random>"
        if name == own_name:
            log.warning("removing interrupted mini pool build %s", partial)
            shutil.rmtree(partial, ignore_errors=True)
            continue
        with _exclusive(root / f".{name}.lock", blocking=False) as free:
            if free:
                log.warning("removing interrupted mini pool build %s", partial)
                shutil.rmtree(partial, ignore_errors=True)


def ensure_built(variant: str = "ta20", seed: int = 0, cache_dir=None, version: int = BUILDER_VERSION) -> Path:
    """Return the directory of a finished build of (variant, seed) by builder ``version``, building it first if needed."""
    version = int(version)
    spec = get_variant(variant, version)

    def build(partial: Path) -> None:
        from .build import build_pool  # heavy imports only when a build is needed

        build_pool(spec, seed, partial, version)

    return publish_build(cache_root(cache_dir), build_name(variant, seed, version), _marker(variant, seed, version),
                         lambda path: is_complete(path, variant, seed, version), build)


def _refuse_in_spawned_bootstrap(name: str) -> None:
    """A build's fine-tuning workers are spawned processes, and a spawned process first re-runs the
    top-level code of the script that started the build. Unguarded, that code asks for the same build
    again and would wait forever on the lock its parent holds while the parent waits for it: say so
    instead. (``_inheriting`` is multiprocessing's own flag for that phase; its spawn module checks
    it the same way before refusing to start processes there.)"""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            f"mini pool {name}: a build was requested while a worker process spawned by the builder was importing "
            "the script that started it. Put the code that builds or loads a mini pool in that script under "
            "`if __name__ == \"__main__\":` (the fusion_bench CLI needs nothing)."
        )


def publish_build(root: Path, name: str, marker: dict, complete: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """``root/name`` once ``complete`` says it is finished; otherwise ``build`` writes it into a
    partial directory (under the name's lock), the ``marker`` is written last and the directory is
    renamed into place. Shared by every offline pool builder (CLIP, causal LM)."""
    final = root / name
    if complete(final):
        return final
    _refuse_in_spawned_bootstrap(name)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{name}.lock"):
        if complete(final):  # another process built it while we waited
            return final
        _remove_dead_partials(root, name)
        if final.exists():
            log.warning("mini pool cache %s is incomplete or from another builder; rebuilding", final)
            shutil.rmtree(final)
        partial = root / f".partial-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build(partial)
            (partial / COMPLETE_MARKER).write_text(json.dumps(marker))
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if not complete(final):
        raise RuntimeError(f"mini pool build at {final} did not complete")
    return final
