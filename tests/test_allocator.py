"""Every command keeps the memory of freed tensors in glibc's heap instead of handing it back to the kernel."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from support import run_env

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")

# Bytes glibc holds in mmapped blocks (mallinfo2's hblkhd) while a 64 MB tensor lives: before any
# command runs, and inside one (run_command is every command's entry point).
PROBE = """
import ctypes, json, sys
import torch
from cvae_dist.errors import run_command

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_while_a_tensor_lives():
    before = libc.mallinfo2().hblkhd
    tensor = torch.empty(64 << 20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd - before

found = {"outside": mapped_while_a_tensor_lives()}
run_command([], lambda argv: argv, lambda _: found.update(inside=mapped_while_a_tensor_lives()))
print(json.dumps(found))
"""


def probe(**env: str) -> dict[str, int]:
    result = subprocess.run([sys.executable, "-c", PROBE], env={**run_env(), **env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_command_allocates_large_tensors_from_the_heap_not_fresh_kernel_pages():
    found = probe()
    assert found["outside"] >= 64 << 20, found  # glibc's default: a block of its own from the kernel
    assert found["inside"] == 0, found


def test_the_users_own_allocator_settings_win():
    assert probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")["inside"] >= 64 << 20
