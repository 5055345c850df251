"""One measurement in a fresh child process, so that its peak memory belongs to that run only.

Parent side: ``run_child`` starts ``python SCRIPT --child-spec JSON``, takes the peak RSS from
``os.wait4`` (``ru_maxrss``, what ``/usr/bin/time -v`` reports), kills the child when its RSS or the
machine's free memory crosses a guard (a result, not a crash of the benchmark), and enforces a
timeout. Child side: ``child_main`` runs the measurement, samples its own RSS (to split the peak
into phases) and writes ``result.json``, also when it fails. ``freeze_package`` copies our package
once, so a long run measures one version of the code while the tree is being edited.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .machine import ROOT, commit_of
from .report import GB

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


class RssSampler:
    """This process's RSS every ``interval`` s, in a thread: the peak of any phase can be read after."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.samples: List[List[float]] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append([self.now(), self.rss()])
            self._stop.wait(self.interval)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> Optional[int]:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return max(values) if values else None


def child_main(spec: Dict[str, Any], body: Callable[[Dict[str, Any], RssSampler], Dict[str, Any]]) -> None:
    """Run ``body(spec, sampler)`` and write its result (or the error) to ``run_dir/result.json``."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"status": "ok"}
    sampler = RssSampler()
    try:
        result.update(body(spec, sampler))
    except BaseException as error:  # a crash is a result
        result.update(status="error", error=f"{type(error).__name__}: {str(error)[:1500]}", traceback_tail=traceback.format_exc()[-3000:])
    finally:
        sampler.stop()
        (run_dir / "result.json").write_text(json.dumps(result, default=str))


def child_env(threads: int, frozen: Optional[str] = None) -> Dict[str, str]:
    """Offline, ``threads`` OpenMP/MKL threads, and the frozen package (if any) first on the path."""
    env = dict(os.environ, **OFFLINE_ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if frozen:
        env["PYTHONPATH"] = frozen + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def freeze_package(target_root: Path) -> Dict[str, str]:
    """Copy ``fusion_bench_fw/`` + ``config/`` to ``target_root/<content hash>``; children import that copy.

    Returns its path and the commit it was taken at (``+dirty``: with uncommitted code changes)."""
    sources = [ROOT / "fusion_bench_fw", ROOT / "config"]
    digest = hashlib.sha256()
    for file in sorted(f for d in sources for f in d.rglob("*") if f.suffix in (".py", ".yaml")):
        digest.update(str(file.relative_to(ROOT)).encode() + file.read_bytes())
    root = Path(target_root) / digest.hexdigest()[:12]
    if not root.exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for source in sources:
            shutil.copytree(source, tmp / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        tmp.rename(root)
    return {"path": str(root), "commit": commit_of(ROOT)}


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 1 << 62


def _vm_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(script: Path, spec: Dict[str, Any], env: Dict[str, str], log_file: Path, *, mem_guard_gb: float, min_available_gb: float, timeout_s: float) -> Dict[str, Any]:
    """Run ``script --child-spec spec`` in a fresh process; its result dict plus what the parent measured."""
    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        process = subprocess.Popen([sys.executable, str(script), "--child-spec", json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(run_dir))
    guard: Dict[str, Any] = {"killed": None, "max_vmrss": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            rss, available = _vm_rss(process.pid), _meminfo("MemAvailable")
            guard["max_vmrss"] = max(guard["max_vmrss"], rss)
            if rss > mem_guard_gb * GB or available < min_available_gb * GB:
                guard["killed"] = f"memory guard: child RSS {rss / GB:.1f} GB, machine MemAvailable {available / GB:.1f} GB"
                try:
                    process.send_signal(signal.SIGKILL)
                except OSError:  # it ended on its own meanwhile
                    pass
                return
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout_s:
            timed_out = True
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.1)
    done.set()
    watcher.join()
    returncode = os.waitstatus_to_exitcode(status)
    result_file = run_dir / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {"status": "crashed"}
    result.update(
        wall_s=time.perf_counter() - started,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        loadavg=[round(load_start, 2), round(os.getloadavg()[0], 2)],
    )
    if guard["killed"]:
        result.update(status="killed", error=guard["killed"], peak_rss_bytes=max(result["peak_rss_bytes"], guard["max_vmrss"]))
    elif timed_out:
        result.update(status="timeout", error=f"child exceeded {timeout_s} s")
    elif returncode != 0 and result.get("status") == "ok":
        result.update(status="crashed", error=f"exit code {returncode}" + (" (SIGKILL: likely the kernel OOM killer)" if returncode == -9 else ""))
    if result["status"] != "ok":
        result["log_tail"] = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
    return result
