"""Large buffers go back to the system once freed, so that a serving process's resident memory follows what it holds.

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at first) with a mapping of its own,
unmapped when freed; but each time such a block is freed it raises the threshold to that block's size (up to
32 MiB), and from then on blocks of that size come from the heaps, whose freed space stays resident, fragmented
between the threads' arenas. Measured on the gateway refusing 7 MB images over gRPC and HTTP one at a time
(tests/faults/test_hostile_input.py::test_memory_stays_bounded), its peak settled at 185-200 MB (94 MB at rest);
with the threshold fixed, at about 145 MB, its resident set falling back to about 100 MB after each burst.
The cost is a mapping and its page faults per such block: small beside the work of a message of a megabyte or more.

It is not small beside the work of the model, which allocates the same temporaries on every batch (the kernel
matrix alone is up to 16 MiB, ``fastsvc.CHUNK_ROWS`` rows by the support vectors). Mapped anew, and their pages
faulted in anew, on every call, they made a batch of 64 cost 0.25 ms a prediction instead of 0.11. Fixing the
threshold also stops glibc from raising the trim threshold with it (to twice the mapping threshold), so the heap's
free top went back to the system whenever 128 KiB were free, and came back page by page on the next batch. So each
process says how large its blocks are: the gateway's are messages (``MESSAGE_BLOCK_BYTES``); inference's are the
model's temporaries, kept in the heap up to glibc's largest threshold (``COMPUTE_BLOCK_BYTES``), and trimming
follows glibc's own rule, twice the threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MESSAGE_BLOCK_BYTES = 1 << 20
COMPUTE_BLOCK_BYTES = 32 << 20  # glibc's largest: HEAP_MAX_SIZE / 2 on 64-bit


def return_large_buffers(threshold: int = MESSAGE_BLOCK_BYTES) -> bool:
    """Have every block of ``threshold`` bytes or more mapped on its own and unmapped once freed, and the heap trimmed
    past twice that; False where the C library is not glibc (no ``mallopt``) and nothing changed."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * threshold))
