"""Where the bench's results go, and how: every bench module writes through these.

- ``append_row``: one JSON line appended to a results file (``bench/results/quality.jsonl`` keeps every recipe
  measured, one line each, so that a long run keeps what it measured); ``read_rows`` reads them back.
- ``markdown_table`` and ``text_table``: a header and rows of cells as a Markdown table or aligned text.
- ``write_run``: a run's JSON record and plot as ``<prefix>-<stamp>.json`` / ``.png`` under ``bench/results/``,
  copied to the run kind's ``latest`` names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Append ``row`` to the JSON-lines file ``path`` (made, with its folder, if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        stream.write(json.dumps(row) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; none if it does not exist."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table. ``align`` holds one letter a column: ``l`` left (``---``), ``r`` right (``---:``);
    columns it does not reach are right-aligned."""
    rule = "|" + "|".join("---" if _left(align, i) else "---:" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)])


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """The same table as padded text columns, two spaces apart, for a terminal."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) if _left(align, i) else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths, strict=True))) for line in lines)


def _left(align: str, column: int) -> bool:
    return align[column : column + 1] == "l"


def write_run(record: Mapping[str, Any], stamp: str, draw: Callable[[Path], None], *, prefix: str,
              latest: str) -> tuple[Path, Path]:
    """``<prefix>-<stamp>.json`` (``record``) and ``.png`` (what ``draw`` saves at the path it is given) under
    bench/results/, copied to ``<latest>.json`` and ``<latest>.png``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, png_path = RESULTS / f"{prefix}-{stamp}.json", RESULTS / f"{prefix}-{stamp}.png"
    json_path.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
    draw(png_path)
    shutil.copyfile(json_path, RESULTS / f"{latest}.json")
    shutil.copyfile(png_path, RESULTS / f"{latest}.png")
    return json_path, png_path


def _jsonable(value: object) -> object:
    """numpy scalars as numbers; anything else json cannot write (a Path, ...) as text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
