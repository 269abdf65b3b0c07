"""digits.logs: one JSON object per line with the service, the logger, the message and whatever extra was given."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest

from digits.logs import JsonFormatter, configure


def record(msg: str = "fitted %s in %.1f s", args: tuple[object, ...] = ("svc", 12.34), **extra: object
           ) -> logging.LogRecord:
    made = logging.LogRecord("services.trainer", logging.WARNING, __file__, 1, msg, args, None)
    made.created = 1_700_000_000.123456
    made.__dict__.update(extra)
    return made


def test_a_line_holds_the_time_level_service_logger_and_message() -> None:
    line = json.loads(JsonFormatter("trainer").format(record()))
    assert line == {"ts": "2023-11-14T22:13:20.123+00:00", "level": "warning", "service": "trainer",
                    "logger": "services.trainer", "msg": "fitted svc in 12.3 s"}
    assert datetime.fromisoformat(line["ts"]).timestamp() == pytest.approx(1_700_000_000.123)


def test_extra_fields_join_the_line_and_anything_unserializable_becomes_text() -> None:
    line = json.loads(JsonFormatter("gateway").format(record(job="j-1", rows=64, when=datetime(2025, 1, 2))))
    assert (line["job"], line["rows"], line["when"]) == ("j-1", 64, "2025-01-02 00:00:00")
    assert not {"args", "levelno", "pathname", "created", "msecs", "taskName"} & set(line)


def test_an_exception_comes_with_its_traceback() -> None:
    try:
        raise ValueError("bad pixels")
    except ValueError:
        failed = record("predict failed", ())
        failed.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter("inference").format(failed))
    assert line["exc"].startswith("Traceback") and "ValueError: bad pixels" in line["exc"]


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_replaces_the_root_handlers_with_one_json_handler(root_logger: logging.Logger) -> None:
    root_logger.addHandler(logging.StreamHandler(io.StringIO()))
    configure("gateway", "debug")
    assert len(root_logger.handlers) == 1 and root_logger.level == logging.DEBUG
    assert isinstance(root_logger.handlers[0].formatter, JsonFormatter)
    assert root_logger.handlers[0].formatter.service == "gateway"
