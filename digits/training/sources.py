"""The data sources a job may name, as words: the grammar the gateway validates and the trainer loads by.

A data spec is one source or several joined by ``+`` (``sample+folder:/data/mine``). This module only parses
(the gateway imports it through ``digits.training.jobs`` and must never load data or scikit-learn);
``digits.training.datasets`` holds one loader per kind. A new kind is a line in ``KINDS`` and a loader there.
"""

from __future__ import annotations

from dataclasses import dataclass

from digits.errors import InvalidInput

# Every kind, and whether it takes a path (``kind:DIR``) or stands alone.
KINDS: dict[str, bool] = {"sample": False, "idx": True, "openml": False, "folder": True, "corrections": False}
# Kinds that are MNIST's own digits: two of them in one job would share digits, so that one part's validation
# digits could be another part's training digits. A job combines at most one of them with other sources.
MNIST_KINDS = frozenset({"sample", "idx", "openml"})
# Kinds that only add to another source: the accepted corrections are digits some model got wrong, a handful and
# skewed towards the hard ones, so a model learns its digits from another source and these on top.
ADDED_KINDS = frozenset({"corrections"})
MAX_PARTS = 8
USAGE = ("use 'sample', 'idx:DIR', 'openml' or 'folder:DIR', or several joined by '+' "
         "(sample+folder:DIR, sample+corrections)")


@dataclass(frozen=True)
class Part:
    kind: str
    path: str = ""  # for the kinds that take one

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if KINDS[self.kind] else self.kind


def parse(spec: str) -> list[Part]:
    """The parts of a data spec, in order. A ``+`` only separates parts where a known kind follows it, so a
    directory's name may hold a ``+`` (``folder:/data/a+b``) unless a kind's name comes right after it."""
    pieces: list[str] = []
    for piece in spec.split("+"):
        if pieces and _kind_of(piece) is None:
            pieces[-1] += "+" + piece  # part of the previous part's path
        else:
            pieces.append(piece)
    parts = [_part(piece, spec) for piece in pieces]
    if len(parts) > MAX_PARTS:
        raise InvalidInput(f"data {spec!r} names {len(parts)} sources; at most {MAX_PARTS} combine")
    if len({str(p) for p in parts}) < len(parts):
        raise InvalidInput(f"data {spec!r} names a source twice")
    mnist = [str(p) for p in parts if p.kind in MNIST_KINDS]
    if len(mnist) > 1:
        raise InvalidInput(f"data {spec!r} combines {' and '.join(mnist)}, which hold the same MNIST digits (one's "
                           "validation digits would be fitted on as the other's); combine one of them with folders")
    if all(p.kind in ADDED_KINDS for p in parts):
        raise InvalidInput(f"data {spec!r}: {' and '.join(str(p) for p in parts)} only adds to another source (the "
                           "accepted corrections are the few digits a model got wrong); use e.g. "
                           f"sample+{parts[0]}")
    return parts


def _kind_of(piece: str) -> str | None:
    kind, colon, _ = piece.partition(":")
    if kind in KINDS and bool(colon) == KINDS[kind]:
        return kind
    return None


def _part(piece: str, spec: str) -> Part:
    kind = _kind_of(piece)
    if kind is None or (KINDS[kind] and not piece.partition(":")[2]):
        raise InvalidInput(f"unknown data set {spec!r}: {USAGE}")
    return Part(kind, piece.partition(":")[2])
