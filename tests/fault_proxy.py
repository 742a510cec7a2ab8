"""A loopback HTTP proxy that injects network faults, for testing how the worker copes with a bad network.

Put it between the worker and the backend, or the worker and IPFS (RPC API and path gateway): it forwards
every request to one upstream base URL and, following a seeded random :class:`FaultPolicy`, drops the
connection, delays the request, answers 500/503 itself, or cuts the response body midway.

It is a plain stdlib server on purpose: faults like "close the socket after half the body" need exact
control over what is written to the socket, which a framework would hide. Every response carries
``Connection: close``, so each request has its own connection and a fault never leaks into the next request
on a kept-alive one. Request bodies (``Content-Length`` or chunked, as the worker's multipart uploads are)
and response bodies are streamed, never held whole in memory.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import itertools
import logging
import random
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

logger = logging.getLogger("tests.fault_proxy")

KINDS = ("drop", "delay", "status", "cut")
FORWARDED = "forwarded"
PIECE = 64 * 1024  # bytes read or written at a time
MAX_LINE = 64 * 1024  # longest chunk-size or trailer line accepted in a chunked request body
UPSTREAM_TIMEOUT_S = 60.0  # backstop only: closing the proxy aborts upstream sockets anyway
CLIENT_TIMEOUT_S = 60.0
STOP_WAIT_S = 2.0  # how long closing waits for in-flight requests after aborting their sockets

# Headers that describe one connection, not the message: never copied from one side to the other.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class FaultPolicy:
    """Which faults to inject and how often; frozen so handler threads can share it without a lock.

    ``rate`` is the probability that a request gets a fault; the kind is then picked uniformly from
    ``kinds``. ``delay_s`` bounds the uniform delay of a ``delay`` fault. ``only_paths``, if set, limits
    faults to request paths starting with one of its prefixes (e.g. ``("/api/v0/add",)``).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = KINDS
    delay_s: tuple[float, float] = (0.2, 1.0)
    seed: int = 0
    only_paths: tuple[str, ...] = ()
    # Throttle: every response body flows at most this fast (per connection), faults or not; None: no cap.
    bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        # Lists are accepted too, but stored as tuples so the policy stays hashable and immutable.
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "delay_s", tuple(self.delay_s))
        object.__setattr__(self, "only_paths", tuple(self.only_paths))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or (self.rate > 0 and not self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        low, high = self.delay_s
        if not 0.0 <= low <= high:
            raise ValueError(f"delay_s must be (low, high) with 0 <= low <= high, got {self.delay_s}")
        if self.bytes_per_s is not None and self.bytes_per_s <= 0:
            raise ValueError(f"bytes_per_s must be above 0, got {self.bytes_per_s}")


@dataclass(frozen=True)
class _Fault:
    """What happens to one request, drawn whole under the lock so a seed gives the same sequence."""

    kind: str  # one of KINDS, or FORWARDED
    delay_s: float = 0.0
    status: int = 0
    cut_fraction: float = 0.0


class _ClientGone(Exception):
    """The client closed its connection while sending the request body: nobody is left to answer."""


class _BadRequestBody(Exception):
    """The request body is not valid chunked encoding."""


class FaultProxy:
    """Forwards HTTP to ``upstream`` and injects faults per :class:`FaultPolicy`; use it as a context manager.

    ``url`` is valid as soon as the object exists (the port is bound in ``__init__``); requests are served
    between ``__enter__`` and ``__exit__``. ``counts`` holds one entry per request: its fault kind, or
    ``"forwarded"`` when it went through untouched, so ``sum(counts.values())`` is the number of requests.
    """

    def __init__(self, upstream: str, policy: FaultPolicy) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) base URL, got {upstream!r}")
        self.upstream = upstream
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._lock = threading.Lock()
        self._policy = policy
        self._rng = random.Random(policy.seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self._server = _ProxyServer(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def policy(self) -> FaultPolicy:
        return self._policy

    def set_policy(self, policy: FaultPolicy) -> None:
        """Swaps the policy and restarts the random sequence from its seed, so what follows is repeatable."""
        with self._lock:
            self._policy = policy
            self._rng = random.Random(policy.seed)

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
                name=f"fault-proxy:{self.url.rsplit(':', 1)[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stops accepting, aborts requests in flight (their clients see a disconnect), frees the port."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()  # blocks until serve_forever returns, which needs it to have started
            self._thread.join()
        if not self._server.abort_all(STOP_WAIT_S):
            logger.warning("Fault proxy %s: requests still running %.0f s after abort", self.url, STOP_WAIT_S)
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def decide(self, method: str, target: str) -> _Fault:
        """Draws this request's fault (and counts it); paths outside ``only_paths`` draw nothing."""
        path = target.split("?", 1)[0]  # not urlsplit: a path like //x would parse as a host
        with self._lock:
            policy = self._policy
            fault = _Fault(FORWARDED)
            applies = not policy.only_paths or path.startswith(policy.only_paths)
            if applies and policy.rate > 0 and self._rng.random() < policy.rate:
                fault = _Fault(
                    kind=self._rng.choice(policy.kinds),
                    delay_s=self._rng.uniform(*policy.delay_s),
                    status=self._rng.choice((500, 503)),
                    cut_fraction=self._rng.uniform(0.1, 0.9),
                )
            self.counts[fault.kind] += 1
        if fault.kind != FORWARDED:
            detail = {"delay": f"{fault.delay_s:.2f} s", "status": str(fault.status)}.get(fault.kind, "-")
            logger.debug("Injecting %s (%s) into %s %s", fault.kind, detail, method, target)
        return fault

    def upstream_connection(self) -> http.client.HTTPConnection:
        factory = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return factory(self._host, self._port, timeout=UPSTREAM_TIMEOUT_S)

    def upstream_target(self, target: str) -> str:
        return self._prefix + target


class _ProxyServer(ThreadingHTTPServer):
    """Threads per connection, plus a registry of live sockets so closing can abort requests in flight."""

    daemon_threads = True  # a handler that ignores the abort must never keep the interpreter alive
    request_queue_size = 64  # the worker may open several connections at once

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.stopping = threading.Event()
        self._live = threading.Condition()
        self._sockets: set[socket.socket] = set()
        self._active = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # Counted here, in the serving thread, so abort_all (which runs after serve_forever returned)
        # cannot miss a handler whose thread has not started yet.
        with self._live:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._finished()
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        self.track(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.untrack(request)
            self._finished()

    def _finished(self) -> None:
        with self._live:
            self._active -= 1
            self._live.notify_all()

    def track(self, sock: socket.socket) -> None:
        """Registers a socket to abort on close; one registered after the abort is aborted at once."""
        with self._live:
            self._sockets.add(sock)
            if self.stopping.is_set():
                _abort(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._live:
            self._sockets.discard(sock)

    def abort_all(self, wait_s: float) -> bool:
        """Wakes every blocked handler by shutting its sockets down; True once no handler is running."""
        with self._live:
            self.stopping.set()
            for sock in self._sockets:
                _abort(sock)
            return self._live.wait_for(lambda: self._active == 0, timeout=wait_s)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # Resets are this proxy's daily business; only unexpected errors deserve more than DEBUG.
        exc = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(exc, OSError) else logging.WARNING
        logger.log(level, "Fault proxy: error serving %s", client_address, exc_info=True)


def _abort(sock: socket.socket) -> None:
    """Shuts a socket down but leaves it open: its owner thread wakes with EOF or an error and closes it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One request per connection: decide the fault, then act it out or forward the request."""

    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT_S
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        self.close_connection = True  # every response says Connection: close; see the module docstring
        if self.server.stopping.is_set():
            return
        fault = self.server.proxy.decide(self.command, self.path)
        try:
            if fault.kind == "drop":
                return  # the server closes the socket: the client gets no response at all
            if fault.kind == "status":
                self._drain_request_body()  # unread request bytes would turn our close into a reset
                self._send_plain(fault.status, f"injected fault: {fault.status}\n", retry_after=True)
                return
            if fault.kind == "delay" and self.server.stopping.wait(fault.delay_s):
                return
            self._forward(fault.cut_fraction if fault.kind == "cut" else None)
        except (_ClientGone, OSError, http.client.HTTPException) as exc:
            # The client hung up, or upstream broke off mid-body: either way the connection is done.
            logger.debug("%s %s broke off: %r", self.command, self.path, exc)
        except _BadRequestBody as exc:
            self._send_plain(400, f"bad request body: {exc}\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    # -- request side --------------------------------------------------------------------------------------

    def _is_chunked(self) -> bool:
        encodings = self.headers.get("Transfer-Encoding", "")
        return encodings.split(",")[-1].strip().lower() == "chunked"

    def _request_body(self) -> Iterator[bytes] | None:
        """The request body as a stream of pieces (de-chunked), or None when the request has none."""
        if self._is_chunked():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        try:
            size = int(length)
        except ValueError:
            raise _BadRequestBody(f"Content-Length {length!r}") from None
        return self._read_exact(size)

    def _read_exact(self, size: int) -> Iterator[bytes]:
        while size > 0:
            try:
                piece = self.rfile.read(min(size, PIECE))
            except OSError as exc:  # raised as _ClientGone so it is not mistaken for an upstream failure
                raise _ClientGone(f"reading the request body: {exc}") from exc
            if not piece:
                raise _ClientGone(f"request body ended {size} bytes short")
            size -= len(piece)
            yield piece

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            try:
                line = self.rfile.readline(MAX_LINE)
            except OSError as exc:
                raise _ClientGone(f"reading a chunk header: {exc}") from exc
            if not line.endswith(b"\n"):
                raise _ClientGone("chunked request body ended inside a chunk header")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequestBody(f"chunk size line {line[:40]!r}") from None
            if size == 0:
                break
            yield from self._read_exact(size)
            if self.rfile.readline(MAX_LINE).strip():
                raise _BadRequestBody("chunk data not followed by CRLF")
        while self.rfile.readline(MAX_LINE).strip():  # trailers: read and dropped
            pass

    def _drain_request_body(self) -> None:
        for _ in self._request_body() or ():
            pass

    def _upstream_headers(self) -> dict[str, str]:
        """Client headers minus per-connection ones; http.client sets Host and the body framing itself."""
        named_in_connection = {h.strip().lower() for h in self.headers.get("Connection", "").split(",")}
        skip = HOP_BY_HOP | named_in_connection | {"host", "expect", "content-length"}
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            if name.lower() in skip:
                continue
            # Repeated request headers may be folded into one, comma-separated (RFC 9110, 5.3).
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    # -- forwarding ----------------------------------------------------------------------------------------

    def _forward(self, cut_fraction: float | None) -> None:
        body = self._request_body()
        headers = self._upstream_headers()
        if body is not None and not self._is_chunked():
            headers["Content-Length"] = self.headers["Content-Length"].strip()
        # With no Content-Length and an iterator body, http.client re-chunks the body upstream.
        proxy = self.server.proxy
        conn = proxy.upstream_connection()
        try:
            try:
                conn.connect()
                self.server.track(conn.sock)
                conn.request(self.command, proxy.upstream_target(self.path), body=body, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if self.server.stopping.is_set():
                    return
                logger.warning("Fault proxy: upstream %s failed for %s: %s", proxy.upstream, self.path, exc)
                self._send_plain(502, f"upstream failed: {exc}\n")
                return
            self._relay(response, cut_fraction)
        finally:
            if conn.sock is not None:
                self.server.untrack(conn.sock)
            conn.close()

    def _relay(self, response: http.client.HTTPResponse, cut_fraction: float | None) -> None:
        """Streams the upstream response back; a cut sends part of the body and then closes."""
        no_body = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        length = 0 if no_body else response.length  # None: chunked or close-delimited upstream
        rechunk = length is None  # a close-delimited body would look complete even when cut
        pieces = iter(lambda: response.read1(PIECE), b"")
        budget = None
        if cut_fraction is not None:
            total = length
            if total is None:  # unknown length: cut inside the first piece
                first = next(pieces, b"")
                total = len(first)
                pieces = itertools.chain([first], pieces)
            if total == 0:
                # Nothing to cut: lose the whole response instead, after upstream has acted on the request.
                logger.debug("Cut of %s %s: empty body, dropping the response", self.command, self.path)
                return
            budget = min(int(total * cut_fraction), total - 1)

        self.send_response_only(response.status, response.reason or None)
        for name, value in response.getheaders():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or (rechunk and lowered == "content-length"):
                continue
            self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        if no_body:
            return

        sent = 0
        started = time.monotonic()
        rate = self.server.proxy.policy.bytes_per_s
        for piece in pieces:
            if budget is not None and sent + len(piece) > budget:
                self._write_piece(piece[: budget - sent], rechunk)
                logger.debug("Cut %s %s after %d body bytes", self.command, self.path, budget)
                return
            self._write_piece(piece, rechunk)
            sent += len(piece)
            if rate is not None:  # a slow gateway: wait until the bytes sent so far are due
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0 and self.server.stopping.wait(ahead):
                    return
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")

    def _write_piece(self, piece: bytes, chunked: bool) -> None:
        if not piece:
            return  # an empty chunk would end a chunked body
        if chunked:
            self.wfile.write(b"%X\r\n%b\r\n" % (len(piece), piece))
        else:
            self.wfile.write(piece)

    def _send_plain(self, status: int, text: str, retry_after: bool = False) -> None:
        body = text.encode()
        with contextlib.suppress(OSError):
            self.send_response_only(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if retry_after and status == 503:
                self.send_header("Retry-After", "1")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
