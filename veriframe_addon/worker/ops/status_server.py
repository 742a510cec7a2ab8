"""``GET /health`` and ``GET /metrics`` for a headless worker, on a loopback port by default.

Both answer from what the worker last published (its ``WorkerStatus`` snapshots) and the process's
metrics: a request never waits on the network, so a scraper polling every few seconds costs nothing,
and a hung backend cannot hang the health check that should report it.

The endpoint tells anyone who can reach it what this machine renders, so it binds 127.0.0.1 unless the
operator names another address (behind their own firewall or reverse proxy).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ..loop import Worker
from ..observe.metrics import CONTENT_TYPE, METRICS, WorkerMetrics
from ..status import WorkerStatus

log = logging.getLogger("veriframe.worker")

# Every state WorkerStatus.state takes (see loop.py), so a state gauge always has the same series.
STATES = (
    "starting",
    "signing-in",
    "polling",
    "idle",
    "waiting",
    "paused",
    "sleeping",
    "busy",
    "claiming",
    "downloading",
    "rendering",
    "uploading",
    "reporting",
    "stopped",
)
JOB_STAGES = ("claiming", "downloading", "rendering", "uploading", "reporting")
# How the job loop words these conditions in ``last_error`` (loop.py); matched here, not parsed.
IPFS_WAIT_MARK = "waiting for IPFS"
# State changes that mean an IPFS transfer just succeeded (the download, then the upload).
TRANSFER_DONE = (("downloading", "rendering"), ("uploading", "reporting"))


def addon_version() -> str:
    try:
        from ... import bl_info  # the package above the worker core: always loaded before it

        return ".".join(str(part) for part in bl_info["version"])
    except (ImportError, KeyError, TypeError):
        return "unknown"


class WorkerMonitor:
    """The latest snapshot of a worker plus what it says about the backend and IPFS; thread-safe.

    Pass ``update`` as the worker's ``on_status``. Backend and IPFS health are inferred from the job
    loop's own progress (a poll that got an answer, a download that finished), not probed.
    """

    def __init__(
        self,
        *,
        env_mode: str = "development",
        redact: Callable[[str], str] = lambda text: text,
        metrics: WorkerMetrics = METRICS,
    ) -> None:
        self.env_mode = env_mode
        self.redact = redact
        self.metrics = metrics
        self.version = addon_version()
        self.running = False
        self.started_wall = time.time()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._status = WorkerStatus()
        self._signed_in: Callable[[], bool] = lambda: False
        self._backend = (True, "not contacted yet")
        self._ipfs = (True, "not used yet")
        self._live = CollectorRegistry()  # this monitor's own: a second monitor never clashes with it
        self._live.register(LiveGauges(self))

    def watch(self, worker: Worker) -> None:
        self._signed_in = lambda: worker.auth.signed_in

    def update(self, status: WorkerStatus) -> None:
        with self._lock:
            before, self._status = self._status, status
            if status.state == "waiting":
                self._backend = (False, status.last_error or "unreachable")
            elif status.state in ("polling", *JOB_STAGES):
                self._backend = (True, "reachable")
            new_error = status.last_error if status.last_error != before.last_error else None
            transferred = (before.state, status.state) in TRANSFER_DONE or (
                status.last_result_cid is not None and status.last_result_cid != before.last_result_cid
            )
            if new_error and IPFS_WAIT_MARK in new_error:
                self._ipfs = (False, new_error)
            elif transferred:
                self._ipfs = (True, "the last transfer succeeded")

    def health(self) -> dict[str, object]:
        """The ``/health`` document: ``status`` is ``degraded`` when any of ``problems`` holds."""
        with self._lock:
            status, backend, ipfs = self._status, self._backend, self._ipfs
        signed_in = bool(self._signed_in())
        state = "starting" if self.running and status.state == "stopped" else status.state
        problems = []
        if not backend[0]:
            problems.append(f"backend: {backend[1]}")
        if not ipfs[0]:
            problems.append(f"ipfs: {ipfs[1]}")
        if state == "idle" and not signed_in and status.last_error:
            problems.append(f"not signed in: {status.last_error}")
        current = None
        if status.job_id is not None:
            current = {
                "id": status.job_id,
                "asset_cid": status.asset_cid,
                "stage": status.state if status.state in JOB_STAGES else None,
                "progress": status.progress,
            }
        slots = [
            {
                "slot": slot.index,
                "device": slot.device,
                "state": slot.state,
                "job": None
                if slot.job_id is None
                else {
                    "id": slot.job_id,
                    "asset_cid": slot.asset_cid,
                    "stage": slot.state if slot.state in JOB_STAGES else None,
                    "progress": slot.progress,
                },
            }
            for slot in status.slots
        ]
        document: dict[str, object] = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "state": state,
            "signed_in": signed_in,
            "verified": status.verified,
            "current_job": current,
            "slots": slots,  # with RENDER_SLOTS above 1: each slot's job (current_job: the latest change)
            "delivering": list(status.delivering),  # results on their way beside the next render
            "completed": status.completed,
            "failed": status.failed,
            "last_error": status.last_error,
            "held": status.held,
            "last_result_cid": status.last_result_cid,
            "backend": {"ok": backend[0], "detail": backend[1]},
            "ipfs": {"ok": ipfs[0], "detail": ipfs[1]},
            "blender": {"version": status.blender, "sandbox": status.sandbox},
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "version": self.version,
            "env": self.env_mode,
        }
        return json.loads(self.redact(json.dumps(document)))

    def metrics_text(self) -> str:
        """The ``/metrics`` scrape: the worker's counters, then gauges of its state at this moment."""
        return self.metrics.exposition() + generate_latest(self._live).decode("utf-8")


class LiveGauges(Collector):
    """Gauges built per scrape from the monitor's latest snapshot (``prometheus_client`` collects them)."""

    def __init__(self, monitor: WorkerMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        monitor = self.monitor
        health = monitor.health()
        backend, ipfs, current = health["backend"], health["ipfs"], health["current_job"]
        assert isinstance(backend, dict) and isinstance(ipfs, dict)
        yield _gauge("veriframe_worker_up", "1 while the worker loop runs.", int(monitor.running))
        yield _gauge(
            "veriframe_worker_start_time_seconds",
            "When this worker started (Unix time).",
            monitor.started_wall,
        )
        state = GaugeMetricFamily(
            "veriframe_worker_state", "1 for the state the worker is in, 0 for the others.", labels=["state"]
        )
        for name in STATES:
            state.add_metric([name], 1 if name == health["state"] else 0)
        yield state
        job = GaugeMetricFamily(
            "veriframe_current_job_info",
            "1 for the job in hand, labelled by id and stage.",
            labels=["job_id", "stage"],
        )
        slot_jobs = [slot["job"] for slot in health["slots"] if slot["job"]]  # type: ignore[union-attr]
        for held in slot_jobs or ([current] if isinstance(current, dict) else []):
            job.add_metric([str(held["id"]), held["stage"] or ""], 1)
        yield job
        busy = GaugeMetricFamily(
            "veriframe_slot_busy", "1 while a render slot holds a job (RENDER_SLOTS).", labels=["slot"]
        )
        for slot in health["slots"]:  # type: ignore[union-attr]
            busy.add_metric([str(slot["slot"])], int(slot["job"] is not None))
        yield busy
        progress = current["progress"] if isinstance(current, dict) else None
        yield _gauge(
            "veriframe_current_job_progress", "Progress of the current stage, 0 to 1.", progress or 0
        )
        yield _gauge(
            "veriframe_backend_up", "1 unless the last contact with the backend failed.", int(backend["ok"])
        )
        yield _gauge("veriframe_ipfs_up", "1 unless the last IPFS transfer failed.", int(ipfs["ok"]))


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    monitor: WorkerMonitor


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "VeriFrameWorker"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/health":
            self._answer(200, "application/json", json.dumps(self.server.monitor.health(), indent=2) + "\n")
        elif path == "/metrics":
            self._answer(200, CONTENT_TYPE, self.server.monitor.metrics_text())
        else:
            body = {"error": f"no such path: {path}", "paths": ["/health", "/metrics"]}
            self._answer(404, "application/json", json.dumps(body) + "\n")

    def _answer(self, code: int, content_type: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("[Worker] Status endpoint: %s", format % args)


class StatusServer:
    """The HTTP server in a daemon thread; ``close()`` stops it."""

    def __init__(self, monitor: WorkerMonitor, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                "STATUS_PORT", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._httpd.monitor = monitor
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="veriframe-status",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    def start(self) -> str:
        self._thread.start()
        host = self._httpd.server_address[0]
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "[Worker] The status endpoint listens on %s: anyone who can reach it sees this worker", host
            )
        log.info("[Worker] Status endpoint at %s/health (metrics at %s/metrics)", self.url, self.url)
        return self.url

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
