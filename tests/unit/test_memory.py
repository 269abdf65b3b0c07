"""Serving processes have glibc's malloc map large blocks on their own: freed messages leave the resident set."""

from __future__ import annotations

import platform

from digits.platform import memory


def test_the_threshold_is_set_where_the_c_library_is_glibc_and_nothing_fails_elsewhere() -> None:
    assert memory.return_large_buffers() == (platform.libc_ver()[0] == "glibc")


def test_each_process_names_its_blocks_and_glibc_takes_the_largest_it_allows() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert memory.return_large_buffers(memory.COMPUTE_BLOCK_BYTES) == glibc
    assert memory.return_large_buffers(memory.MESSAGE_BLOCK_BYTES) == glibc  # back to the default for later tests
