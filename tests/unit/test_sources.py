"""The words of a data spec, as the gateway checks them and the trainer loads them: sources joined by '+'."""

from __future__ import annotations

import pytest

from digits.errors import InvalidInput
from digits.training import sources
from digits.training.sources import Part


@pytest.mark.parametrize(("spec", "parts"), [
    ("sample", [Part("sample")]),
    ("idx:/data/mnist", [Part("idx", "/data/mnist")]),
    ("openml", [Part("openml")]),
    ("folder:/data/mine", [Part("folder", "/data/mine")]),
    ("sample+folder:/data/mine", [Part("sample"), Part("folder", "/data/mine")]),
    ("idx:/m+folder:/a+folder:/b", [Part("idx", "/m"), Part("folder", "/a"), Part("folder", "/b")]),
    ("folder:/data/a+b+sample", [Part("folder", "/data/a+b"), Part("sample")]),  # '+' in a name stays in it
    ("folder:relative/dir", [Part("folder", "relative/dir")]),
    ("sample+corrections", [Part("sample"), Part("corrections")]),
    ("idx:/m+corrections", [Part("idx", "/m"), Part("corrections")]),
    ("corrections+folder:/a", [Part("corrections"), Part("folder", "/a")]),
])
def test_a_spec_is_its_parts_in_order(spec: str, parts: list[Part]) -> None:
    assert sources.parse(spec) == parts
    assert "+".join(str(p) for p in parts) == spec


@pytest.mark.parametrize(("spec", "words"), [
    ("ftp://x", "unknown data set"),
    ("folder:", "unknown data set"),
    ("sample+", "unknown data set"),
    ("+sample", "unknown data set"),
    ("sample:/x", "unknown data set"),
    ("folder:/a+folder:/a", "names a source twice"),
    ("sample+openml", "hold the same MNIST digits"),
    ("idx:/m+sample+folder:/a", "hold the same MNIST digits"),
    ("+".join(f"folder:/{n}" for n in range(9)), "at most 8 combine"),
    ("corrections", "only adds to another source"),
    ("corrections:/x", "unknown data set"),
    ("sample+corrections+corrections", "names a source twice"),
])
def test_bad_specs_are_refused_with_a_reason(spec: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        sources.parse(spec)
