"""The mini pool cache: what counts as a finished build, rebuilds, interrupted builds, the lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion_bench_fw.mini import BUILDER_VERSION, cache_root, ensure_built, is_complete, load_manifest
from fusion_bench_fw.mini.cache import CACHE_ENV_VAR, COMPLETE_MARKER, build_name

pytestmark = pytest.mark.slow


def _copy_build(src: Path, cache: Path, name: str) -> Path:
    dst = cache / name
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    assert cache_root() == Path.home() / ".cache" / "fusion_bench_fw" / "mini"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert build_name("ta20", 3) == f"ta20-v{BUILDER_VERSION}-seed3"
    assert build_name("ta20", 0, version=3) == "ta20-v3-seed0"


def test_older_builder_versions_stay_buildable_by_number(tmp_path):
    """v3 keeps its settings (no fine-tuning anchor); v4 changes only the fine-tuning, so both share
    the pretraining and the data; an unknown version is refused with the choices."""
    import dataclasses

    from fusion_bench_fw.mini.variants import VARIANTS_BY_VERSION, get_variant

    v3, v4 = get_variant("ta20", 3), get_variant("ta20", 4)
    assert v3.finetune_anchor == 0 and (v3.finetune_steps, v3.finetune_batch) == (250, 64)
    assert v4.finetune_anchor > 0
    shared = [f.name for f in dataclasses.fields(v3) if not f.name.startswith("finetune_") and f.name != "ta_grid"]
    assert {k: getattr(v3, k) for k in shared} == {k: getattr(v4, k) for k in shared}
    assert BUILDER_VERSION in VARIANTS_BY_VERSION
    with pytest.raises(ValueError, match=r"builder_version=2: choose one of \[3, 4\]"):
        ensure_built("micro", 0, cache_dir=tmp_path, version=2)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_is_complete_rejects_partial_or_foreign_builds(mini_micro_dir, tmp_path):
    name = build_name("micro", 0)
    good = _copy_build(mini_micro_dir, tmp_path, name)
    assert is_complete(good, "micro", 0)
    assert not is_complete(good, "micro", 1)
    assert not is_complete(good, "ta20", 0)

    (good / COMPLETE_MARKER).unlink()  # interrupted before the marker was written
    assert not is_complete(good, "micro", 0)

    other = _copy_build(mini_micro_dir, tmp_path, "missing-model")
    shutil.rmtree(other / "models" / load_manifest(other).tasks[-1])
    assert not is_complete(other, "micro", 0)

    older = _copy_build(mini_micro_dir, tmp_path, "older")
    _rewrite(older / COMPLETE_MARKER, builder_version=BUILDER_VERSION - 1)
    assert not is_complete(older, "micro", 0)

    older_manifest = _copy_build(mini_micro_dir, tmp_path, "older-manifest")
    _rewrite(older_manifest / "manifest.json", builder_version=BUILDER_VERSION - 1)
    assert not is_complete(older_manifest, "micro", 0)


def test_builder_version_mismatch_rebuilds(mini_micro_dir, tmp_path):
    # The same directory name, but its marker and manifest come from another builder version.
    stale = _copy_build(mini_micro_dir, tmp_path, build_name("micro", 0))
    _rewrite(stale / COMPLETE_MARKER, builder_version=BUILDER_VERSION + 1)
    _rewrite(stale / "manifest.json", builder_version=BUILDER_VERSION + 1)
    (stale / "planted.txt").write_text("left by the stale build")
    # An older version's cache under its own name is neither used nor touched.
    old_name = f"micro-v{BUILDER_VERSION - 1}-seed0"
    old = _copy_build(mini_micro_dir, tmp_path, old_name)

    built = ensure_built("micro", seed=0, cache_dir=tmp_path)
    assert built == stale and is_complete(built, "micro", 0)
    assert not (built / "planted.txt").exists()
    assert load_manifest(built).builder_version == BUILDER_VERSION
    assert old.exists() and (old / COMPLETE_MARKER).exists()


def _build_in_subprocess(cache: Path, seed: int) -> subprocess.Popen:
    code = f"from fusion_bench_fw.mini import ensure_built; ensure_built('micro', seed={seed}, cache_dir={str(cache)!r})"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_interrupted_build_is_detected_and_rebuilt(tmp_path):
    proc = _build_in_subprocess(tmp_path, seed=0)
    try:
        # kill it once it has written part of the pool (some data, no checkpoints yet)
        partial = _wait_for(
            lambda: next((p for p in tmp_path.glob(".partial-*") if (p / "data").exists()), None), 120, "a partial build"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    final = tmp_path / build_name("micro", 0)
    assert partial.exists() and not final.exists()  # nothing half-built was published
    # a leftover of another build name whose builder is gone (its lock is free)
    foreign = tmp_path / f".partial-{build_name('ta20', 9)}-12345-deadbeef"
    (foreign / "data").mkdir(parents=True)

    built = ensure_built("micro", seed=0, cache_dir=tmp_path)
    assert built == final and is_complete(built, "micro", 0)
    assert not list(tmp_path.glob(".partial-*"))  # both leftovers were cleaned up


def _waiting_for_flock(pid: int) -> bool:
    """True when /proc/locks shows `pid` blocked on a flock (lines marked '->')."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # e.g. "1: -> FLOCK ADVISORY WRITE 5678 00:2a:1234 0 EOF"
        if "->" in fields and "FLOCK" in fields and str(pid) in fields:
            return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_second_process_waits_for_the_lock_and_reuses_the_build(mini_micro_dir, tmp_path):
    """While one process holds the build lock, another waits for it, then reuses what was published."""
    import fcntl

    name = build_name("micro", 0)
    with open(tmp_path / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _build_in_subprocess(tmp_path, seed=0)
        _wait_for(lambda: _waiting_for_flock(proc.pid) or proc.poll() is not None, 120, "the builder to block")
        assert proc.poll() is None  # blocked on the lock
        assert not list(tmp_path.glob(".partial-*"))  # and not building
        # the lock holder publishes a finished build, then releases the lock
        published = _copy_build(mini_micro_dir, tmp_path, name)
        (published / "published-by-holder.txt").write_text("x")
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert proc.wait(120) == 0
    assert (published / "published-by-holder.txt").exists()  # reused, not rebuilt
    assert not list(tmp_path.glob(".partial-*"))


UNGUARDED_SCRIPT = """
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from fusion_bench_fw.mini.cache import publish_build


def build(partial):
    partial.mkdir()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # as the builder's fine-tunes run
        pool.submit(abs, -1).result()
    (partial / "built").write_text("yes")


# no `if __name__ == "__main__":` guard: the spawned worker re-runs this line
publish_build(Path(sys.argv[1]), "demo", {"v": 1}, lambda path: (path / "built").exists(), build)
"""


def test_a_script_without_a_main_guard_gets_a_clear_error_not_a_deadlock(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr and "mini pool demo" in proc.stderr
    assert not (tmp_path / "cache" / "demo").exists()  # nothing half-built was published
    # guarded, the same build runs and publishes
    script.write_text(UNGUARDED_SCRIPT.replace("\npublish_build(", '\nif __name__ == "__main__":\n    publish_build('))
    subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], check=True, timeout=120)
    assert (tmp_path / "cache" / "demo" / "built").read_text() == "yes"
