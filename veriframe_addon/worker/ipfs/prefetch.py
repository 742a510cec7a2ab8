"""Fetching the next job's scene while this one renders, so its download is done when it is claimed.

While a job renders, ``Prefetcher.start`` looks (in a thread of its own) for the next job this worker
would take and downloads its asset into the asset cache, verified against its CID exactly as a claimed
job's download is; a job's ``fetch`` then finds it there. Nothing is claimed: a prefetched job that
someone else takes costs its cache entry, which the cache's LRU removes in time. Bytes that fail
verification are never kept, so never used. The upload of the running job comes first: ``cancel`` (at
the upload) stops a prefetch still under way, and the job downloads what is missing when it is claimed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from ..backend.api import Job
from ..errors import WorkerError
from .asset_cache import AssetCache
from .client import IpfsClient

log = logging.getLogger("veriframe.worker")


class Prefetcher:
    """At most one prefetch at a time, each with its own IPFS client and cancel event."""

    def __init__(
        self,
        assets: AssetCache,
        next_job: Callable[[str], Job | None],
        client: Callable[[threading.Event], IpfsClient],
    ) -> None:
        self.assets = assets
        self.next_job = next_job  # the next job this worker would take, other than the one named
        self.client = client  # an IPFS client that gives up when its event is set
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._fetching: str | None = None  # the asset CID the prefetch under way downloads

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, running_job: str) -> None:
        """Looks for the job after ``running_job`` and fetches its asset, in the background."""
        if not self.assets.enabled or self.busy:
            return
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(running_job, self._cancel), daemon=True, name="veriframe-prefetch"
        )
        self._thread.start()

    def cancel(self, wait: float = 5.0) -> None:
        """Stops a prefetch under way (its partial download is removed); returns once it stopped."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(wait)

    def settle(self, asset_cid: str, stop: threading.Event) -> None:
        """Before a claimed job fetches ``asset_cid``. A prefetch of that very asset is waited for: it
        lands in the cache, verified, and the job copies it from there instead of downloading it a second
        time beside it. A prefetch of any other asset is stopped: the claimed job has the link to itself,
        and the next prefetch can start. ``stop`` (the worker's) ends the wait."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        if self._fetching != asset_cid:
            self.cancel()
            return
        log.info("[Worker] Waiting for the prefetch of asset %s to finish", asset_cid)
        while thread.is_alive():
            if stop.is_set():
                self.cancel()
                return
            thread.join(0.2)

    def _run(self, running_job: str, cancel: threading.Event) -> None:
        try:
            job = self.next_job(running_job)
        except WorkerError as exc:
            log.debug("[Worker] No prefetch: could not list the next jobs (%s)", exc)
            return
        if job is None or cancel.is_set() or self.assets.has(job.asset_cid):
            return
        partial = self.assets.root / f".prefetch-{secrets.token_hex(6)}.part"
        started = time.monotonic()
        self._fetching = job.asset_cid
        try:
            self.assets.root.mkdir(parents=True, exist_ok=True)
            download = self.client(cancel).download(job.asset_cid, partial)
            if cancel.is_set():
                return
            kept = self.assets.adopt(job.asset_cid, partial)
        except WorkerError as exc:  # bytes that failed verification never reach the cache
            if not cancel.is_set():
                log.warning(
                    "[Worker] Prefetch of job %s's asset %s failed (it downloads when claimed): %s",
                    job.id,
                    job.asset_cid,
                    exc,
                )
            return
        finally:
            self._fetching = None
            partial.unlink(missing_ok=True)
        if kept:
            log.info(
                "[Worker] Prefetched job %s's asset %s (%d bytes, verified, %.1fs) while rendering",
                job.id,
                job.asset_cid,
                download.size,
                time.monotonic() - started,
            )
