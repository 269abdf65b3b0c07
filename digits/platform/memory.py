"""Large buffers go back to the system once freed, so that a serving process's resident memory follows what it holds.

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at first) with a mapping of its own,
unmapped when freed; but each time such a block is freed it raises the threshold to that block's size (up to
32 MiB), and from then on blocks of that size come from the heaps, whose freed space stays resident, fragmented
between the threads' arenas. Measured on the gateway refusing 7 MB images over gRPC and HTTP one at a time
(tests/faults/test_hostile_input.py::test_memory_stays_bounded), its peak settled at 185-200 MB (94 MB at rest);
with the threshold fixed, at about 145 MB, its resident set falling back to about 100 MB after each burst.
The cost is a mapping and its page faults per such block: small beside the work of a message of a megabyte or more.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD_BYTES = 1 << 20


def return_large_buffers(threshold: int = THRESHOLD_BYTES) -> bool:
    """Have every block of ``threshold`` bytes or more mapped on its own and unmapped once freed; False where the C
    library is not glibc (no ``mallopt``) and nothing changed."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))
