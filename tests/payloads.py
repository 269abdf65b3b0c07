"""Hostile payloads shared by the tests of "nothing read from Redis, a file or a request is ever run as code"."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


class RunsOnUnpickling:
    """Pickles as a call of os.system that touches ``marker``: unpickling it runs that command, so the marker's
    absence proves nothing unpickled it (the marker must be a path the unpickling process can write)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)
