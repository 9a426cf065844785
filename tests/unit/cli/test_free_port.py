"""Ports handed to services in tests and the demo stay clear of the ephemeral range."""

from __future__ import annotations

import socket

import pytest

from driftloop.shared.cli.stack.broker import _ephemeral_range, free_port

pytestmark = pytest.mark.unit


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low, _ = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert all(10000 <= p < max(low, 12000) for p in ports)
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
