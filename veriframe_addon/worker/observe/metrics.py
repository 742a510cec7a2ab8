"""The worker's Prometheus metrics, kept and written by ``prometheus_client`` (pure Python, vendored as a
wheel like the others).

Each ``WorkerMetrics`` has its own ``CollectorRegistry``, never the library's global one: reloading the
add-on, or a test making a second set, builds a fresh registry instead of raising duplicate-series
errors, and another add-on's metrics in the same Blender never show up in our ``/metrics``. The library
is shared by every extension in a Blender, so its process-wide switches (such as turning off the
``*_created`` series) are left alone.

Counts are per process: a worker restarted inside the same Blender keeps counting, and a scraper sees a
reset only when the process restarts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

# The text format ``generate_latest`` writes (0.0.4), and the Content-Type that says so.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Short, fixed categories: a label value per job id or error text would grow without bound.
FAILURE_REASONS = ("scene_rejected", "render_error", "asset_error", "ipfs", "backend_refused", "other")
STAGES = ("download", "render", "upload", "report")
RETRY_KINDS = ("backend", "ipfs_download", "ipfs_upload", "other")
# Seconds; renders run from a second to RENDER_TIMEOUT (300 s by default), downloads from ms to minutes.
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class WorkerMetrics:
    """The worker's counters and stage timings; gauges of its live state are the status server's."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_completed = Counter(
            "veriframe_jobs_completed_total", "Jobs whose result the backend accepted.", registry=r
        )
        self.jobs_failed = Counter(
            "veriframe_jobs_failed_total", "Jobs given up, by the kind of reason.", ["reason"], registry=r
        )
        self.bytes_downloaded = Counter(
            "veriframe_bytes_downloaded_total", "Verified asset bytes downloaded from IPFS.", registry=r
        )
        self.asset_cache_hits = Counter(
            "veriframe_asset_cache_hits_total",
            "Jobs whose asset came from the local cache, not IPFS.",
            registry=r,
        )
        self.bytes_uploaded = Counter(
            "veriframe_bytes_uploaded_total", "Result bytes stored in IPFS.", registry=r
        )
        self.retries = Counter(
            "veriframe_retries_total",
            "Requests sent again after a network error, 5xx or 429.",
            ["what"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "veriframe_stage_seconds",
            "Seconds each finished job stage took.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        # Every labelled series exists from the start at zero, so rate() and alerts work before the first
        # failure, retry or job.
        for reason in FAILURE_REASONS:
            self.jobs_failed.labels(reason=reason)
        for kind in RETRY_KINDS:
            self.retries.labels(what=kind)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)

    def value(self, sample: str, **labels: str) -> float:
        """One sample's current value (0 when it has none yet), e.g. ``value("veriframe_retries_total",
        what="backend")`` or ``value("veriframe_stage_seconds_count", stage="render")``."""
        return self.registry.get_sample_value(sample, labels) or 0.0

    def exposition(self) -> str:
        """These metrics as a ``/metrics`` scrape answers with them."""
        return generate_latest(self.registry).decode("utf-8")


METRICS = WorkerMetrics()
