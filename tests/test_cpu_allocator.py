"""keep_freed_memory: freed tensor memory stays in the process (glibc), so the next allocation of the
same size does not page-fault it in again; each case runs in a fresh interpreter, as the setting is
process-wide."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# RSS after a 24 MiB tensor (the size of a large weight matrix) is written and freed, relative to before
PROBE = """
import os, sys, torch
from fusion_bench_fw.cpu_allocator import keep_freed_memory
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
if sys.argv[1] == 'keep':
    assert keep_freed_memory() and keep_freed_memory()  # applied once, then reported as in effect
x = torch.ones(6 * 2**20)  # 24 MiB, every page written
before = rss(); del x; after = rss()
print((before - after) / 2**20)
"""


def freed_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_default_glibc_returns_a_freed_tensor_to_the_os():
    assert freed_mib("default") > 20


def test_keep_freed_memory_keeps_it_for_reuse():
    assert freed_mib("keep") < 4


def test_fw_methods_apply_it_by_default_and_can_turn_it_off():
    from fusion_bench_fw import FWHard, FWSoft

    assert FWSoft().run_options.keep_freed_memory and FWHard().run_options.keep_freed_memory
    assert not FWSoft(keep_freed_memory=False).run_options.keep_freed_memory
