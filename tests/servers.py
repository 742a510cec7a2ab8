"""Real HTTP servers for tests: an ASGI app under uvicorn on a free 127.0.0.1 port, in a thread.

Tests talk to the devnet over real sockets (no mocks), so what passes here is what the worker sees.
The socket is bound before uvicorn starts, so there is no window where another test grabs the port.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from veriframe_addon.worker.ops.status_server import StatusServer, WorkerMonitor
from veriframe_addon.worker.status import StatusBoard

logger = logging.getLogger("tests.servers")

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@contextlib.contextmanager
def serve_app(app: Callable[..., Any]) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL, e.g. ``http://127.0.0.1:54321``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"uvicorn on port {port} exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn on port {port} did not start within {START_TIMEOUT_S} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():  # a client still holding a stream open: stop waiting for it
            logger.warning("uvicorn on port %d ignored shutdown for %.0f s; forcing it", port, STOP_TIMEOUT_S)
            server.force_exit = True
            thread.join(STOP_TIMEOUT_S)
        sock.close()


@contextlib.contextmanager
def listening_socket() -> Iterator[tuple[int, list[str]]]:
    """A port that records every connection made to it (and answers none): the proof that nothing
    connected, for code that must stay offline. Yields the port and the list of peers seen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    seen: list[str] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                peer, address = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append(f"{address[0]}:{address[1]}")
            peer.close()

    thread = threading.Thread(target=accept, name="listening-socket", daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        done.set()
        thread.join(5)
        sock.close()


def settings_pointing_at(port: int, data_dir: Path) -> dict[str, str]:
    """Worker settings whose backend, IPFS API and gateway are all ``port`` (a ``listening_socket``)."""
    return {
        "BACKEND_API_URL": f"http://127.0.0.1:{port}/api/v1",
        "IPFS_API": f"/ip4/127.0.0.1/tcp/{port}",
        "IPFS_GATEWAY": f"http://127.0.0.1:{port}/ipfs",
        "WORKER_ADDRESS": "0x1",
        "WORKER_PRIVATE_KEY": "0x2",
        "VERIFRAME_DATA_DIR": str(data_dir),
    }


@contextlib.contextmanager
def served_status() -> Iterator[tuple[StatusBoard, str]]:
    """A real status board as the job flow publishes to, served by a real status server on 127.0.0.1:
    (the board, the server's base URL for ``/health`` and ``/metrics``)."""
    monitor = WorkerMonitor(env_mode="production", redact=lambda text: text)
    board = StatusBoard(monitor.update)
    server = StatusServer(monitor, "127.0.0.1", 0)
    url = server.start()
    try:
        monitor.running = True
        yield board, url
    finally:
        server.close()
