"""Counters, gauges and histograms written in Prometheus' text exposition format (version 0.0.4).

Blender's Python has no ``prometheus_client`` and the extension vendors only what it must, so the three
metric kinds the worker needs are kept here: thread-safe (the job loop updates them while the status
server's threads read them) and small enough to read in one sitting.

Counts are per process, like a Prometheus client's default registry: a worker restarted inside the same
Blender keeps counting, and a scraper sees a reset only when the process restarts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Short, fixed categories: a label value per job id or error text would grow without bound.
FAILURE_REASONS = ("scene_rejected", "render_error", "asset_error", "ipfs", "backend_refused", "other")
STAGES = ("download", "render", "upload", "report")
RETRY_KINDS = ("backend", "ipfs_download", "ipfs_upload", "other")
# Seconds; renders run from a second to RENDER_TIMEOUT (300 s by default), downloads from ms to minutes.
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

Key = tuple[str, ...]


def format_number(value: float) -> str:
    """A sample value as Prometheus writes it: integers without a fraction, ``+Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class Metric:
    """One named metric family with a fixed set of label names."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, object]) -> Key:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def exposition(self) -> list[str]:
        """The family's ``# HELP``/``# TYPE`` lines and samples."""
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        with self._lock:
            samples = list(self._samples())
        return [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {self.kind}", *samples]

    def _samples(self) -> Iterator[str]:
        raise NotImplementedError


class _Scalar(Metric):
    """One number per label set (counters and gauges); an unlabelled family starts at 0."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[Key, float] = {} if self.labelnames else {(): 0.0}

    def value(self, **labels: object) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def _samples(self) -> Iterator[str]:
        for key, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.labelnames, key)} {format_number(value)}"


class Counter(_Scalar):
    """Only goes up (a restart resets it; Prometheus' ``rate()`` copes with that)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"{self.name} is a counter: it cannot go down by {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A value that goes up and down; ``clear()`` drops every labelled sample (an "info" gauge that moves
    from one job to the next)."""

    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def clear(self) -> None:
        with self._lock:
            self._values = {} if self.labelnames else {(): 0.0}


class Histogram(Metric):
    """Observations counted into cumulative ``le`` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = STAGE_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be increasing and unique")
        self.buckets = tuple(float(b) for b in buckets if not math.isinf(b))
        self._series: dict[Key, tuple[list[int], list[float]]] = {}  # key -> (bucket counts, [sum, count])
        if not self.labelnames:
            self._ensure(())

    def _ensure(self, key: Key) -> tuple[list[int], list[float]]:
        if key not in self._series:
            self._series[key] = ([0] * len(self.buckets), [0.0, 0.0])
        return self._series[key]

    def touch(self, **labels: object) -> None:
        """Makes a labelled series exist (all zero) before its first observation, so it is scraped."""
        key = self._key(labels)
        with self._lock:
            self._ensure(key)

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            counts, totals = self._ensure(key)
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            totals[0] += value
            totals[1] += 1

    def count(self, **labels: object) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return int(series[1][1]) if series else 0

    def sum(self, **labels: object) -> float:
        with self._lock:
            series = self._series.get(self._key(labels))
            return series[1][0] if series else 0.0

    def _samples(self) -> Iterator[str]:
        names = (*self.labelnames, "le")
        for key, (counts, (total, count)) in sorted(self._series.items()):
            for bound, bucket_count in zip(self.buckets, counts, strict=True):
                yield f"{self.name}_bucket{_labels(names, (*key, format_number(bound)))} {bucket_count}"
            yield f"{self.name}_bucket{_labels(names, (*key, '+Inf'))} {format_number(count)}"
            yield f"{self.name}_sum{_labels(self.labelnames, key)} {format_number(total)}"
            yield f"{self.name}_count{_labels(self.labelnames, key)} {format_number(count)}"


def exposition(metrics: Iterable[Metric]) -> str:
    """The text a ``/metrics`` scrape answers with."""
    lines: list[str] = []
    for metric in metrics:
        lines.extend(metric.exposition())
    return "\n".join(lines) + "\n"


class WorkerMetrics:
    """The worker's counters and stage timings; gauges of its live state are added by the status server."""

    def __init__(self) -> None:
        self.jobs_completed = Counter(
            "veriframe_jobs_completed_total", "Jobs whose result the backend accepted."
        )
        self.jobs_failed = Counter(
            "veriframe_jobs_failed_total", "Jobs given up, by the kind of reason.", ("reason",)
        )
        self.bytes_downloaded = Counter(
            "veriframe_bytes_downloaded_total", "Verified asset bytes downloaded from IPFS."
        )
        self.asset_cache_hits = Counter(
            "veriframe_asset_cache_hits_total", "Jobs whose asset came from the local cache, not IPFS."
        )
        self.bytes_uploaded = Counter("veriframe_bytes_uploaded_total", "Result bytes stored in IPFS.")
        self.retries = Counter(
            "veriframe_retries_total", "Requests sent again after a network error, 5xx or 429.", ("what",)
        )
        self.stage_seconds = Histogram(
            "veriframe_stage_seconds", "Seconds each finished job stage took.", ("stage",)
        )
        for reason in FAILURE_REASONS:
            self.jobs_failed.inc(0, reason=reason)
        for kind in RETRY_KINDS:
            self.retries.inc(0, what=kind)
        for stage in STAGES:
            self.stage_seconds.touch(stage=stage)

    def all(self) -> list[Metric]:
        return [
            self.jobs_completed,
            self.jobs_failed,
            self.bytes_downloaded,
            self.asset_cache_hits,
            self.bytes_uploaded,
            self.retries,
            self.stage_seconds,
        ]


METRICS = WorkerMetrics()
