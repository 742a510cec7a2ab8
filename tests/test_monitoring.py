"""Monitoring: the Prometheus text the worker writes, ``/health`` from its live state, retries counted,
and one real production-mode worker scraped over HTTP while it renders a job.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devnet.process import ROOT, Devnet
from veriframe_addon.worker.net.retry import RetryPolicy
from veriframe_addon.worker.net.transport import JsonTransport
from veriframe_addon.worker.observe.metrics import METRICS, WorkerMetrics
from veriframe_addon.worker.ops.status_server import StatusServer, WorkerMonitor
from veriframe_addon.worker.status import WorkerStatus

from .conftest import worker_env

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d+)?(?:e[-+]?\d+)?|Inf|NaN))$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwaW5hdGEifQ.cGluYXRhLXNpZ25hdHVyZS1zZWNyZXQ"
IPFS_TOKEN = "ipfs-api-token-that-must-stay-secret"


def parse_exposition(text: str) -> dict[tuple[str, frozenset], float]:
    """Checks text against the 0.0.4 format (HELP and TYPE before a family's samples, every sample line
    well-formed, histogram buckets cumulative) and returns {(name, labels): value}."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"} and name not in types, line
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        assert (name, labels) not in samples, f"duplicate sample {line!r}"
        samples[(name, labels)] = float(match["value"].replace("Inf", "inf"))
    for name, kind in types.items():
        if kind != "histogram":
            continue
        series: dict[frozenset, list[tuple[float, float]]] = {}
        for (sample, labels), value in samples.items():
            if sample == f"{name}_bucket":
                le = dict(labels)["le"]
                series.setdefault(labels - {("le", le)}, []).append((float(le), value))
        for rest, buckets in series.items():
            counts = [count for _, count in sorted(buckets)]
            assert counts == sorted(counts), f"{name} buckets are not cumulative"
            assert counts[-1] == samples[(f"{name}_count", rest)]
    return samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# ------------------------------------------------------------------------------------- the text format


def test_exposition_is_valid_prometheus_text() -> None:
    """What ``prometheus_client`` writes for our metrics parses strictly, with cumulative buckets."""
    metrics = WorkerMetrics()
    metrics.jobs_failed.labels(reason="render_error").inc()
    metrics.bytes_uploaded.inc(2.5)
    for seconds in (0.2, 0.7, 5, 50):
        metrics.stage_seconds.labels(stage="render").observe(seconds)
    samples = parse_exposition(metrics.exposition())
    assert value(samples, "veriframe_jobs_failed_total", reason="render_error") == 1
    assert value(samples, "veriframe_bytes_uploaded_total") == 2.5
    buckets = [
        value(samples, "veriframe_stage_seconds_bucket", stage="render", le=le)
        for le in ("0.25", "1.0", "10.0", "60.0", "+Inf")
    ]
    assert buckets == [1, 2, 3, 4, 4]
    assert value(samples, "veriframe_stage_seconds_sum", stage="render") == pytest.approx(55.9)
    assert metrics.value("veriframe_stage_seconds_count", stage="render") == 4
    with pytest.raises(ValueError):
        metrics.bytes_uploaded.inc(-1)  # a counter never goes down
    with pytest.raises(ValueError):
        metrics.retries.labels(stage="wrong label")


def test_metrics_survive_an_add_on_reload() -> None:
    """Each set of metrics has its own registry: re-importing the module (Blender's add-on reload) or a
    second set never raises duplicate-series errors, and neither sees the other's counts. In a child
    Python, so this test's reload cannot split the metrics the other tests read."""
    probe = (
        "import importlib\n"
        "import veriframe_addon.worker.observe.metrics as m\n"
        "first = m.WorkerMetrics(); first.jobs_completed.inc()\n"
        "second = importlib.reload(m).WorkerMetrics()\n"
        "name = 'veriframe_jobs_completed_total'\n"
        "print(first.value(name), second.value(name))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1.0", "0.0"]


def test_the_worker_metrics_exist_from_the_start_at_zero() -> None:
    """Every reason, retry kind and stage is there before it first happens, so rate() and alerts work."""
    samples = parse_exposition(WorkerMetrics().exposition())
    for reason in ("scene_rejected", "render_error", "asset_error", "ipfs", "backend_refused", "other"):
        assert value(samples, "veriframe_jobs_failed_total", reason=reason) == 0
    for stage in ("download", "render", "upload", "report"):
        assert value(samples, "veriframe_stage_seconds_count", stage=stage) == 0
    for kind in ("backend", "ipfs_download", "ipfs_upload", "other"):
        assert value(samples, "veriframe_retries_total", what=kind) == 0
    assert value(samples, "veriframe_jobs_completed_total") == 0


# ------------------------------------------------------------------------------------------- retries


class _FlakyBackend(BaseHTTPRequestHandler):
    answers: list[int] = []

    def do_GET(self) -> None:
        code = self.answers.pop(0) if self.answers else 200
        body = b'{"ok": true}' if code == 200 else b'{"detail": "busy"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def flaky_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()
    server.server_close()


def test_retries_are_counted_by_kind(flaky_backend: str) -> None:
    _FlakyBackend.answers = [503, 502]
    before = METRICS.value("veriframe_retries_total", what="backend")
    transport = JsonTransport(flaky_backend, policy=RetryPolicy(attempts=5, base_delay=0.01))
    assert transport.request("GET", "/jobs/available") == {"ok": True}
    assert METRICS.value("veriframe_retries_total", what="backend") == before + 2


# ----------------------------------------------------------------------------------- /health, offline


def test_health_follows_the_workers_snapshots_over_http() -> None:
    monitor = WorkerMonitor(env_mode="production", redact=lambda text: text.replace("s3cret", "[REDACTED]"))
    server = StatusServer(monitor, "127.0.0.1", 0)
    url = server.start()
    try:
        monitor.running = True
        assert requests.get(f"{url}/health", timeout=5).json()["state"] == "starting"
        job = {"job_id": "job-9", "asset_cid": "QmX"}
        for status in (
            WorkerStatus(state="polling", blender="Blender 4.5.0", sandbox="sandboxed (bwrap)"),
            WorkerStatus(state="downloading", progress=0.5, **job),
            WorkerStatus(
                state="downloading", last_error="Job job-9 waiting for IPFS: s3cret gateway down", **job
            ),
        ):
            monitor.update(status)
        down = requests.get(f"{url}/health", timeout=5).json()
        assert down["status"] == "degraded" and down["ipfs"]["ok"] is False
        assert "s3cret" not in json.dumps(down) and "[REDACTED] gateway down" in down["ipfs"]["detail"]
        assert down["current_job"] == {
            "id": "job-9",
            "asset_cid": "QmX",
            "stage": "downloading",
            "progress": None,
        }

        monitor.update(WorkerStatus(state="downloading", progress=1.0, **job))
        monitor.update(WorkerStatus(state="rendering", progress=0.25, **job))
        rendering = requests.get(f"{url}/health", timeout=5).json()
        assert rendering["status"] == "ok" and rendering["ipfs"]["ok"] is True
        assert (
            rendering["current_job"]["stage"] == "rendering" and rendering["current_job"]["progress"] == 0.25
        )
        assert rendering["blender"] == {"version": None, "sandbox": None}  # this snapshot carries none

        monitor.update(WorkerStatus(state="waiting", last_error="Waiting for the backend: HTTP 503"))
        waiting = requests.get(f"{url}/health", timeout=5).json()
        assert (waiting["status"], waiting["backend"]["ok"], waiting["current_job"]) == (
            "degraded",
            False,
            None,
        )
        assert waiting["backend"]["detail"] == "Waiting for the backend: HTTP 503"
        samples = parse_exposition(requests.get(f"{url}/metrics", timeout=5).text)
        assert value(samples, "veriframe_backend_up") == 0 and value(samples, "veriframe_worker_up") == 1
        assert value(samples, "veriframe_worker_state", state="waiting") == 1
        assert value(samples, "veriframe_worker_state", state="rendering") == 0

        monitor.update(WorkerStatus(state="polling"))
        assert requests.get(f"{url}/health", timeout=5).json()["status"] == "ok"
        missing = requests.get(f"{url}/nothing-here", timeout=5)
        assert missing.status_code == 404 and missing.json()["paths"] == ["/health", "/metrics"]
    finally:
        server.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


# --------------------------------------------------------------------------- one real worker, end to end


class _LineReader:
    """Reads a process's stream line by line in a thread, so the test can poll HTTP meanwhile."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n" + "\n".join(self.lines[-40:]))

    def join(self) -> None:
        self._thread.join(30)


def _poll_health(url: str, until: object, timeout: float, seen: list[dict]) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = requests.get(f"{url}/health", timeout=5).json()
        seen.append(health)
        if until(health):  # type: ignore[operator]
            return health
        time.sleep(0.05)
    raise AssertionError(f"/health never matched; last: {seen[-1] if seen else None}")


def test_production_worker_logs_json_and_is_watched_over_http_during_a_job(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    not_a_scene = tmp_path / "notes.txt"
    not_a_scene.write_text("this is not a scene\n")
    bad = devnet.cli("submit", str(not_a_scene)).strip()
    good = devnet.cli("submit", str(sample_blend)).strip()
    env = worker_env(
        devnet,
        tmp_path / "worker",
        VERIFRAME_ENV="production",  # JSON logs by default; POLL_INTERVAL stays 0.5 from worker_env
        IPFS_API_AUTH=f"Bearer {IPFS_TOKEN}",  # sent to a devnet node that asks for none
        PINATA_JWT=JWT,  # parsed, unused with the default provider: still a secret
    )
    secrets = (env["WORKER_PRIVATE_KEY"], env["WORKER_PRIVATE_KEY"][2:], IPFS_TOKEN, JWT)
    process = subprocess.Popen(
        [sys.executable, "-m", "veriframe_addon", "--status-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = _LineReader(process.stderr)
    seen: list[dict] = []
    try:
        announced = json.loads(stderr.wait_for("Status endpoint at http://127.0.0.1:", timeout=60))
        url = re.search(r"http://127\.0\.0\.1:\d+", announced["message"])[0]  # type: ignore[index]

        rendering = _poll_health(
            url, lambda h: (h["current_job"] or {}).get("stage") == "rendering", timeout=180, seen=seen
        )
        assert rendering["current_job"]["id"] == good and rendering["signed_in"] is True
        assert rendering["status"] == "ok" and rendering["backend"]["ok"] and rendering["ipfs"]["ok"]
        assert rendering["blender"]["version"].startswith("Blender 4.") and rendering["version"] == "0.1.0"
        assert rendering["env"] == "production" and rendering["uptime_seconds"] > 0
        assert rendering["failed"] == 1 and rendering["completed"] == 0  # the text file went first
        during = parse_exposition(requests.get(f"{url}/metrics", timeout=5).text)  # mid-job scrape
        assert value(during, "veriframe_current_job_info", job_id=good, stage="rendering") == 1
        assert value(during, "veriframe_jobs_failed_total", reason="asset_error") == 1
        assert value(during, "veriframe_jobs_completed_total") == 0

        done = _poll_health(url, lambda h: h["completed"] == 1, timeout=180, seen=seen)
        assert done["failed"] == 1 and done["last_result_cid"]
        scrape = requests.get(f"{url}/metrics", timeout=5)
        assert scrape.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = parse_exposition(scrape.text)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        stderr.join()

    assert process.returncode == 0, "\n".join(stderr.lines[-40:])
    assert value(samples, "veriframe_jobs_completed_total") == 1
    assert value(samples, "veriframe_jobs_failed_total", reason="asset_error") == 1
    assert value(samples, "veriframe_jobs_failed_total", reason="render_error") == 0
    assert value(samples, "veriframe_bytes_downloaded_total") > sample_blend.stat().st_size * 0.5
    assert value(samples, "veriframe_bytes_uploaded_total") > 0
    for stage in ("download", "render", "upload", "report"):
        assert value(samples, "veriframe_stage_seconds_count", stage=stage) == 1, stage
    assert value(samples, "veriframe_stage_seconds_sum", stage="render") > 0
    assert value(samples, "veriframe_worker_up") == 1

    # Every stderr line is one JSON object; the stage lines carry the job, the stage and the duration.
    lines = [json.loads(line) for line in stderr.lines]
    assert all(ISO_UTC.match(line["time"]) and line["logger"] and line["level"] for line in lines)
    took = {
        line["stage"]: line for line in lines if " took " in line["message"] and line.get("job_id") == good
    }
    assert sorted(took) == ["download", "render", "report", "upload"]
    assert all(isinstance(line["duration"], float | int) and line["duration"] >= 0 for line in took.values())
    assert took["render"]["duration"] > 0
    rendered = next(line for line in lines if line["message"].startswith("[Worker] Render successful"))
    assert (rendered["job_id"], rendered["stage"]) == (good, "render")
    failed = next(line for line in lines if line["message"].startswith(f"[Worker] ✗ Job {bad} failed"))
    assert failed["job_id"] == bad and failed["level"] == "ERROR"
    assert any("SIGTERM received" in line["message"] for line in lines)

    # The same lines, as JSON, in the rotating file in the data folder; no secret anywhere.
    log_file = tmp_path / "worker" / "logs" / "worker.log"
    written = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(line["message"] == f"[Worker] ✓ Successfully completed job {good}" for line in written)
    everything = "\n".join([*stderr.lines, log_file.read_text(), *(json.dumps(h) for h in seen)])
    for secret in secrets:
        assert secret not in everything
