"""The fault proxy itself, against a real upstream: it must forward faithfully and fail exactly as told.

Tests of the worker under faults are only as good as the proxy, so each fault kind is checked here for the
symptom a client really sees, and clean forwarding is checked byte for byte (chunked uploads, big bodies).
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from .fault_proxy import FaultPolicy, FaultProxy
from .servers import serve_app

MIB = 1024 * 1024
BIG = random.Random(7).randbytes(4 * MIB)
STREAMED = BIG[: 2 * MIB]  # served chunked (no Content-Length), so the proxy must re-chunk it
PIECE = 64 * 1024
TIMEOUT = 10


def _upstream_app() -> FastAPI:
    app = FastAPI()

    @app.get("/echo")
    def echo(request: Request) -> dict:
        return {"query": dict(request.query_params), "authorization": request.headers.get("authorization")}

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        digest, length = hashlib.sha256(), 0
        async for piece in request.stream():
            digest.update(piece)
            length += len(piece)
        return {
            "sha256": digest.hexdigest(),
            "length": length,
            "query": dict(request.query_params),
            "transfer_encoding": request.headers.get("transfer-encoding"),
        }

    @app.get("/big")
    def big() -> Response:
        return Response(
            BIG, media_type="application/octet-stream", headers={"X-Content-Length": str(len(BIG))}
        )

    @app.get("/stream")
    def stream() -> StreamingResponse:
        pieces = (STREAMED[i : i + PIECE] for i in range(0, len(STREAMED), PIECE))
        return StreamingResponse(pieces, media_type="application/octet-stream")

    @app.get("/moved")
    def moved() -> Response:
        return Response(status_code=307, headers={"Location": "/echo?x=moved"})

    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(_upstream_app()) as url:
        yield url


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pieces(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked, as the worker's uploads are."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _streamed_length(url: str) -> int | None:
    """Bytes a streaming client reads from ``url``, or None when reading fails with a broken connection."""
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            return sum(len(piece) for piece in response.iter_content(PIECE))
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
        return None


def _noticed_cut(length: int | None, full: int) -> bool:
    """A client noticed a cut if reading raised, or if it got fewer bytes than the whole body."""
    return length is None or length < full


def _outcome(url: str) -> str:
    """A request's result in one word, to compare fault sequences."""
    try:
        response = requests.get(url, timeout=TIMEOUT)
    except requests.ConnectionError:
        return "disconnected"
    except requests.exceptions.ChunkedEncodingError:
        return "truncated"
    return str(response.status_code)


def test_rate_zero_forwards_everything_intact(upstream: str) -> None:
    with FaultProxy(upstream, FaultPolicy()) as proxy:
        echo = requests.get(
            f"{proxy.url}/echo",
            params={"x": "1", "y": "two words"},
            headers={"Authorization": "Bearer t0k"},
            timeout=TIMEOUT,
        )
        assert echo.json() == {"query": {"x": "1", "y": "two words"}, "authorization": "Bearer t0k"}

        upload = random.Random(3).randbytes(3 * MIB)
        chunked = requests.post(
            f"{proxy.url}/upload?name=a.bin", data=_pieces(upload), timeout=TIMEOUT
        ).json()
        assert chunked["sha256"] == _sha(upload) and chunked["length"] == len(upload)
        assert chunked["query"] == {"name": "a.bin"}
        assert chunked["transfer_encoding"] == "chunked"  # streamed on, not buffered into a Content-Length

        sized = requests.post(f"{proxy.url}/upload", data=upload[:MIB], timeout=TIMEOUT).json()
        assert sized["sha256"] == _sha(upload[:MIB]) and sized["transfer_encoding"] is None

        big = requests.get(f"{proxy.url}/big", timeout=TIMEOUT)
        assert _sha(big.content) == _sha(BIG)
        assert big.headers["Content-Length"] == big.headers["X-Content-Length"] == str(len(BIG))
        assert big.headers["Content-Type"] == "application/octet-stream"
        assert big.headers["Connection"] == "close"

        streamed = requests.get(f"{proxy.url}/stream", timeout=TIMEOUT)
        assert streamed.headers["Transfer-Encoding"] == "chunked" and _sha(streamed.content) == _sha(STREAMED)

        moved = requests.get(f"{proxy.url}/moved", allow_redirects=False, timeout=TIMEOUT)
        assert moved.status_code == 307 and moved.headers["Location"] == "/echo?x=moved"

        assert proxy.counts == {"forwarded": 6}


def test_drop_closes_without_a_response(upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.fault_proxy")
    with FaultProxy(upstream, FaultPolicy(rate=1.0, kinds=("drop",))) as proxy:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.url}/echo?x=1", timeout=TIMEOUT)
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{proxy.url}/upload", data=_pieces(bytes(3 * MIB)), timeout=TIMEOUT)
        assert proxy.counts == {"drop": 2}
    assert "Injecting drop (-) into GET /echo?x=1" in caplog.text


def test_status_answers_500_or_503_with_retry_after(upstream: str) -> None:
    with FaultProxy(upstream, FaultPolicy(rate=1.0, kinds=("status",), seed=5)) as proxy:
        responses = [requests.get(f"{proxy.url}/echo", timeout=TIMEOUT) for _ in range(12)]
        # The request body is read before answering, so even a big upload gets the answer, not a reset.
        responses.append(requests.post(f"{proxy.url}/upload", data=_pieces(bytes(2 * MIB)), timeout=TIMEOUT))
    assert {r.status_code for r in responses} == {500, 503}
    for response in responses:
        assert response.headers.get("Retry-After") == ("1" if response.status_code == 503 else None)
    assert proxy.counts == {"status": 13}


def test_delay_waits_then_forwards_intact(upstream: str) -> None:
    with FaultProxy(upstream, FaultPolicy(rate=1.0, kinds=("delay",), delay_s=(0.3, 0.4))) as proxy:
        started = time.monotonic()
        big = requests.get(f"{proxy.url}/big", timeout=TIMEOUT)
        assert time.monotonic() - started >= 0.3
        assert big.status_code == 200 and _sha(big.content) == _sha(BIG)
        assert proxy.counts == {"delay": 1}


def test_throttle_caps_the_body_rate_and_keeps_it_intact(upstream: str) -> None:
    rate = len(BIG) / 0.5  # the whole body in no less than half a second
    with FaultProxy(upstream, FaultPolicy(bytes_per_s=rate)) as proxy:
        started = time.monotonic()
        big = requests.get(f"{proxy.url}/big", timeout=TIMEOUT)
        took = time.monotonic() - started
    assert big.status_code == 200 and _sha(big.content) == _sha(BIG)
    assert took >= 0.45  # the last 64 KiB piece (8 ms at this rate) may arrive before it is due
    assert proxy.counts == {"forwarded": 1}


def test_cut_is_noticed_by_the_client(upstream: str) -> None:
    with FaultProxy(upstream, FaultPolicy(rate=1.0, kinds=("cut",), seed=2)) as proxy:
        for _ in range(3):
            assert _noticed_cut(_streamed_length(f"{proxy.url}/big"), len(BIG))
            assert _noticed_cut(_streamed_length(f"{proxy.url}/stream"), len(STREAMED))
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            requests.get(f"{proxy.url}/big", timeout=TIMEOUT)
        assert _outcome(f"{proxy.url}/echo") in ("truncated", "disconnected")
        assert proxy.counts == {"cut": 8}


def test_seeded_rate_injects_about_that_share(upstream: str) -> None:
    policy = FaultPolicy(rate=0.3, seed=1, delay_s=(0.0, 0.01))
    with FaultProxy(upstream, policy) as proxy:
        outcomes = [_outcome(f"{proxy.url}/echo?i={i}") for i in range(200)]
    counts = proxy.counts
    assert sum(counts.values()) == 200
    assert 0.2 <= (200 - counts["forwarded"]) / 200 <= 0.4
    assert outcomes.count("200") == counts["forwarded"] + counts["delay"]
    assert outcomes.count("500") + outcomes.count("503") == counts["status"]
    assert outcomes.count("disconnected") + outcomes.count("truncated") == counts["drop"] + counts["cut"]
    assert all(counts[kind] > 0 for kind in ("drop", "delay", "status", "cut"))


def test_same_seed_gives_the_same_faults_and_set_policy_restarts_them(upstream: str) -> None:
    policy = FaultPolicy(rate=0.5, kinds=("drop", "status"), seed=42)

    def run(proxy: FaultProxy) -> list[str]:
        return [_outcome(f"{proxy.url}/echo") for _ in range(30)]

    with FaultProxy(upstream, policy) as first, FaultProxy(upstream, policy) as second:
        sequence = run(first)
        assert run(second) == sequence
        first.set_policy(policy)
        assert run(first) == sequence
    assert len(set(sequence)) > 1


def test_only_paths_limits_faults_and_set_policy_lifts_them(upstream: str) -> None:
    policy = FaultPolicy(rate=1.0, kinds=("status",), only_paths=("/big", "/ipfs/"))
    with FaultProxy(upstream, policy) as proxy:
        assert [_outcome(f"{proxy.url}/echo") for _ in range(5)] == ["200"] * 5
        assert requests.get(f"{proxy.url}/big", timeout=TIMEOUT).status_code in (500, 503)
        assert proxy.counts == {"forwarded": 5, "status": 1}
        proxy.set_policy(FaultPolicy())
        assert _sha(requests.get(f"{proxy.url}/big", timeout=TIMEOUT).content) == _sha(BIG)


def test_unreachable_upstream_is_a_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{port}", FaultPolicy()) as proxy:
        assert requests.get(f"{proxy.url}/echo", timeout=TIMEOUT).status_code == 502


@pytest.mark.parametrize("kind", ["upstream never answers", "delay"])
def test_closing_aborts_requests_in_flight(upstream: str, kind: str) -> None:
    """A request stuck upstream or in a delay must not hold up the test that closes the proxy."""
    with socket.create_server(("127.0.0.1", 0)) as black_hole:  # accepts connections, never answers
        if kind == "delay":
            target, policy = upstream, FaultPolicy(rate=1.0, kinds=("delay",), delay_s=(30.0, 30.0))
        else:
            target, policy = f"http://127.0.0.1:{black_hole.getsockname()[1]}", FaultPolicy()
        errors: list[Exception] = []
        proxy = FaultProxy(target, policy).start()

        def client() -> None:
            try:
                requests.get(f"{proxy.url}/echo", timeout=TIMEOUT)
            except requests.RequestException as exc:
                errors.append(exc)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while sum(proxy.counts.values()) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # let the handler reach its blocking read or wait

        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 1.0
        thread.join(5)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], requests.ConnectionError)
    assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]


def test_policy_rejects_nonsense() -> None:
    for bad in ({"rate": 1.5}, {"kinds": ("explode",)}, {"rate": 0.5, "kinds": ()}, {"delay_s": (1.0, 0.5)}):
        with pytest.raises(ValueError):
            FaultPolicy(**bad)
