"""Whether the suite runs on CI (`.ci/run`, which runs with CI=true). There, what a developer's machine may lack
(Chromium, Debian's redis-server) is installed by `.ci/run`, so its absence is a failure, never a skip."""

from __future__ import annotations

from digits.settings import process_environment


def on_ci() -> bool:
    return process_environment().get("CI") == "true"
