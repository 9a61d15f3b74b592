"""An HTTPS server running in a network namespace, on a thread that entered it (shared by
the netns tests that need a real server on a namespace's address)."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mudguard.vhome import enter


@contextlib.contextmanager
def https_server_in(ns: str, make_server: Callable[[], Any], cert_file: Path) -> Iterator[Any]:
    """``make_server()`` (a socketserver, built inside ``ns``) wrapped in TLS with
    ``cert_file``, serving until the block ends; yields the server."""
    ready: list[Any] = []
    started = threading.Event()

    def run() -> None:
        try:
            enter(ns)  # this thread only: setns(2) moves the calling thread
            server = make_server()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_file)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            ready.append(server)
        except BaseException as exc:
            ready.append(exc)
            raise
        finally:
            started.set()
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    server = ready[0]
    if isinstance(server, BaseException):
        raise server
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
