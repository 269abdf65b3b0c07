"""bench.grpc_floor against its own echo server on loopback: every kind of call is answered and measured."""

from __future__ import annotations

import pytest

from bench import grpc_floor


def test_unary_calls_and_stream_messages_are_echoed_and_measured(capsys: pytest.CaptureFixture[str]) -> None:
    grpc_floor.main(["--seconds", "0.3", "--concurrency", "1,4"])
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:3] == ["calls", "C", "calls/s"]
    assert [row.split()[:2] for row in rows] == [["unary", "1"], ["unary", "4"], ["stream", "1"], ["stream", "4"]]
    for row in rows:
        rate, server_us, client_us = (float(v.replace(",", "")) for v in row.split()[2:])
        assert rate > 0 and server_us > 0 and client_us > 0, row
