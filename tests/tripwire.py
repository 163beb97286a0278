"""A listening socket that tells whether anything connected to it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def tripwire() -> Iterator[socket.socket]:
    """A listening socket standing in for a server: any connection shows in its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def contacted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.fixture
def refused_host() -> Iterator[str]:
    """``127.0.0.1:PORT`` where nothing listens and nothing else can: the port stays bound
    (never listening) for the test, so every connection is refused and no other test or
    worker can start a server on it meanwhile (a port found free and let go could be)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
