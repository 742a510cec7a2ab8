"""One claimed job's journey: fetch its scene by CID, render it in the contained Blender, upload the image,
report the result CID.

``JobFlow.process`` is that journey, top to bottom; each stage is a method below it. Records, setbacks
and delivery are the bookkeeper's (``bookkeeping.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .backend.api import Job
from .backend.auth import StarkSigner
from .bookkeeping import Bookkeeper, render_record
from .config import WorkerConfig
from .errors import AssetTooLarge, RenderError, WorkerError
from .finisher import Finisher
from .ipfs.asset_cache import AssetCache
from .ipfs.client import IpfsClient
from .ipfs.prefetch import Prefetcher
from .limits import MIB
from .observe import telemetry
from .observe.metrics import METRICS
from .proof.png_chunks import PngError
from .proof.receipt import SignedReceipt, build_receipt, embed, receipt_felt
from .render.inventory import BlenderInventory
from .render.renderer import BlenderRenderer, RenderResult, png_size
from .render.standby import Standby, StandbyKeeper
from .scene.blend_header import BlendVersion, read_blend_version
from .scene.job_settings import RenderSettings
from .scene.unpack import prepare_blend
from .state.job_records import JobState
from .status import StatusBoard

log = logging.getLogger("veriframe.worker")

MISSING_FILES_LOGGED = 20  # one line each; a scene missing more gets a count after these


class JobFlow:
    """Runs claimed jobs through their stages, one render at a time (the last result may still be on its
    way while the next renders)."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        ipfs: IpfsClient,
        assets: AssetCache,
        blenders: Callable[[], BlenderInventory],
        books: Bookkeeper,
        board: StatusBoard,
        stop: threading.Event,
        signer: StarkSigner,
    ) -> None:
        self.config = config
        self.signer = signer  # signs each result's receipt; the key itself never leaves it
        self.ipfs = ipfs
        self.assets = assets
        self.blenders = blenders  # the inventory, probed on first use
        self.books = books
        self.board = board
        self.stop = stop
        # The next render's Blender, started early (WARM_STANDBY), and the next scene, fetched early
        # (PREFETCH, set up by the worker, which knows which job comes next).
        self.standby = StandbyKeeper(config.jobs_dir, enabled=config.warm_standby)
        self.prefetcher: Prefetcher | None = None
        self.more_jobs: Callable[[], bool] = lambda: True  # whether a job may follow the current one
        self._warm_for: tuple[BlenderRenderer, str] | None = None  # the last job's Blender and engine
        self._last_on_gpu = False  # whether the last render ran on a GPU (its standby warms up with EEVEE)
        # The last job's seal, upload and report, while this slot's next job renders.
        self.finisher = Finisher(self.finish, board)

    def process(
        self,
        job: Job,
        settings: RenderSettings,
        state: JobState | None = None,
        *,
        done: Callable[[bool], None] | None = None,
    ) -> bool:
        """Runs a claimed job to completion, from ``state`` when resuming; True when the backend accepted
        the result. Each finished stage is recorded before the next begins.

        With ``done``, a rendered job's result goes on its way on the slot's finisher while the caller
        takes its next job (``finisher.py``), when a next job may follow: this then returns True once the
        render is recorded. ``done(accepted)`` is called exactly once, when the job is finished, here or
        there, whatever happened.
        """
        handed_on = accepted = False
        try:
            rendered = self._download_and_render(job, settings, state or self.books.begin(job, settings))
            if rendered is None:
                return False
            if done is not None and self.more_jobs():
                self.finisher.hand(job, rendered, done)
                handed_on = True
                return True
            accepted = self.finish(job, rendered)
            return accepted
        finally:
            if done is not None and not handed_on:
                done(accepted)

    def _download_and_render(self, job: Job, settings: RenderSettings, state: JobState) -> JobState | None:
        """The stages up to a recorded render; None when one was set back (see ``Bookkeeper.setback``)."""
        try:
            if not state.reached("downloaded"):
                state = self.books.advance(state, "downloaded", blend=str(self.fetch(job)))
            if not state.reached("rendered"):
                render = self.render(job, settings, Path(str(state.blend)))
                state = self.books.advance(state, "rendered", render=render_record(render))
        except WorkerError as exc:
            self.books.setback(job, state, exc)
            return None
        return state

    def finish(self, job: Job, state: JobState) -> bool:
        """Seals, uploads and reports a rendered job (in line, or on the finisher beside the slot's next
        render); True when the backend accepted the result."""
        try:
            if not state.reached("uploaded"):
                receipt = self.seal(job, state)
                result_cid = self.upload(job, state)
                state = self.books.advance(state, "uploaded", result_cid=result_cid, receipt=receipt.receipt)
        except WorkerError as exc:
            return self.books.setback(job, state, exc)
        return self.books.deliver(job, state)

    # -- the stages ----------------------------------------------------------------------------------
    def fetch(self, job: Job) -> Path:
        """Puts the verified asset into a fresh job folder (from the cache or IPFS); returns the scene."""
        job_dir = self.config.jobs_dir / job.id
        with telemetry.stage(job.id, "download"):
            if job_dir.exists():
                shutil.rmtree(job_dir)
            job_dir.mkdir(parents=True)
            self.board.publish(state="downloading", progress=0.0)
            if self.prefetcher is not None:
                self.prefetcher.settle(job.asset_cid, self.stop)
            if not self._from_cache(job, job_dir / "asset"):
                self._download(job, job_dir / "asset")
            blend = prepare_blend(job_dir / "asset", job_dir / "scene", self.config.limits.max_unpacked_bytes)
            log.info("[Worker] Found blend file: %s", blend)
        return blend

    def render(self, job: Job, settings: RenderSettings, blend: Path) -> RenderResult:
        """Renders ``blend`` in the contained Blender of its release; the image lands in the job folder."""
        with telemetry.stage(job.id, "render"):
            if not blend.is_file():
                raise RenderError(f"the scene {blend} of a resumed job is gone; it cannot be rendered")
            saved_by = read_blend_version(blend)
            wanted = BlendVersion.parse(settings.blender_version) if settings.blender_version else None
            blenders = self.blenders()
            blender = blenders.for_file(saved_by, wanted)
            renderer = blenders.renderer_for(blender)
            log.info(
                "[Worker] Validating and rendering %s (%s, frame %d, %s) in Blender %s (saved by %s)",
                blend.name,
                settings.engine,
                settings.frame,
                "sandboxed" if renderer.sandboxed else "NOT sandboxed",
                blender.short,
                saved_by,
            )
            on = f" on {blender.device.describe()}" if settings.engine == "CYCLES" else ""
            self.board.publish(
                state="rendering", progress=0.0, samples=None, render_blender=blender.label + on
            )
            job_dir = self.config.jobs_dir / job.id
            progress = self._progress_log(job.id)
            standby = self.standby.take(renderer)
            if standby is not None:
                log.info("[Worker] Rendering in a warm standby Blender (%s)", standby_words(standby))
            if self.prefetcher is not None and self.more_jobs():
                self.prefetcher.start(job.id)
            self._warm_for = (renderer, warm_engine(settings.engine, on_gpu=self._last_on_gpu))
            # The next Blender starts now, at idle CPU priority: it takes what the render leaves (all
            # of the CPU on a GPU). Here, in software GL, a stream of 64x48 frames took 0.93 of a bare
            # loop's time this way, 1.07 with the standby started after the render, 1.08 with none.
            self.prepare_standby(beside_render=True)
            try:
                result = renderer.render(
                    blend, job_dir, settings, progress=progress, cancel=self.stop, standby=standby
                )
            finally:
                self.prepare_standby()  # the render is over: the next one's Blender starts (or goes on) now
            self._last_on_gpu = on_gpu(result.device)
            self.board.publish(render_blender=f"{blender.label} on {result.device}")
            log_missing_files(job.id, result.missing_files)
            log.info(
                "[Worker] Render successful: %s (%dx%d, %s, %.1fs, Blender %s, %s threads, nice %s, on %s)",
                result.output,
                result.width,
                result.height,
                result.engine,
                result.seconds,
                result.blender,
                result.threads,
                result.nice,
                result.device,
            )
        return result

    def seal(self, job: Job, state: JobState) -> SignedReceipt:
        """Signs the render's receipt into its PNG (an ``iTXt`` chunk before ``IEND``), pixels untouched.

        Built from the image data and the job record alone, and signed deterministically, so a job
        resumed after a crash seals the very same bytes and uploads under the same CID.
        """
        render = state.render or {}
        output = Path(str(render["output"]))
        png = output.read_bytes()
        try:
            receipt = build_receipt(
                png=png,
                job_id=job.id,
                asset_cid=job.asset_cid,
                worker_address=self.config.worker_address,
                blender=str(render.get("blender") or ""),
                engine=str(render.get("engine") or ""),
                device=str(render.get("device") or ""),
                frame=int(state.settings.get("frame", 1)),
                resolution=(int(render["width"]), int(render["height"])),
                settings=state.settings,
            )
        except PngError as exc:
            raise RenderError(f"Blender's output {output.name} is not a well-formed PNG: {exc}") from None
        r, s = self.signer.sign(receipt_felt(receipt))
        signed = SignedReceipt(receipt, (r, s))
        partial = output.with_suffix(".sealing")
        partial.write_bytes(embed(png, signed))
        os.replace(partial, output)  # a crash leaves the old or the sealed file, never half of one
        log.info(
            "[Worker] Receipt signed into %s (image SHA-256 %s)", output.name, receipt["image_sha256"][:16]
        )
        return signed

    def upload(self, job: Job, state: JobState) -> str:
        """Uploads the rendered image; its CID goes into the journal before this returns.

        A prefetch under way goes on while a next job may follow (it is that job's scene); when none may,
        it is stopped, and the upload has the link to itself.
        """
        output = Path(str((state.render or {})["output"]))
        png_size(output)  # a resumed render must still be there, and a PNG
        if self.prefetcher is not None and not self.more_jobs():
            self.prefetcher.cancel()
        with telemetry.stage(job.id, "upload"):
            self.board.publish(state="uploading", progress=None)
            log.info("[Worker] Uploading render result to IPFS: %s", output)
            result_cid = self.ipfs.upload(output)
            log.info("[Worker] Upload successful. CID: %s", result_cid)
        METRICS.bytes_uploaded.inc(output.stat().st_size)
        telemetry.tally(job.id).bytes_up += output.stat().st_size
        self.books.journal.record_result(job.id, result_cid)
        self.board.publish(last_render=output, last_result_cid=result_cid, last_receipt_signed=True)
        return result_cid

    def prepare_standby(self, *, beside_render: bool = False) -> None:
        """Starts the next job's standby Blender (the last job's Blender and engine; at first the newest
        Blender, warmed with Workbench), unless no job may follow or one is parked already."""
        if not self.standby.enabled or self.stop.is_set() or not self.more_jobs():
            return
        if self._warm_for is None:
            blenders = self.blenders()
            self._warm_for = (blenders.renderer_for(blenders.blenders[-1]), "WORKBENCH")
        renderer, engine = self._warm_for
        self.standby.prepare(renderer, engine, beside_render=beside_render)

    # -- helpers of the stages -----------------------------------------------------------------------
    def _from_cache(self, job: Job, dest: Path) -> bool:
        cached = self.assets.copy_to(job.asset_cid, dest)
        if cached is None:
            return False
        cap = self.config.limits.max_asset_bytes
        if cached.size > cap:  # kept under an earlier, higher MAX_ASSET_MB
            raise AssetTooLarge(
                f"the asset {job.asset_cid} is larger than {cap / MIB:.0f} MB (the cache holds "
                f"{cached.size / MIB:.1f} MB; the cap is MAX_ASSET_MB)"
            )
        log.info(
            "[Worker] Asset CID %s is in the local cache (%d bytes, verified when first downloaded)",
            job.asset_cid,
            cached.size,
        )
        METRICS.asset_cache_hits.inc()
        return True

    def _download(self, job: Job, dest: Path) -> None:
        log.info("[Worker] Downloading asset CID: %s", job.asset_cid)
        started = time.monotonic()

        def on_bytes(done: int, total: int | None) -> None:
            self.board.publish(progress=done / total if total else None)

        download = self.ipfs.download(job.asset_cid, dest, on_bytes)
        seconds = max(time.monotonic() - started, 1e-6)
        log.info(
            "[Worker] Downloaded and verified %d bytes from the %s (%.1f MB/s)",
            download.size,
            download.source,
            download.size / seconds / 1e6,
        )
        METRICS.bytes_downloaded.inc(download.size)
        telemetry.tally(job.id).bytes_down += download.size
        self.assets.add(job.asset_cid, dest)  # before unpacking: the cache keeps the verified bytes

    def _progress_log(self, job_id: str) -> Callable[[float], None]:
        """Publishes render progress, and logs it at every quarter."""
        last_logged = [-1]

        def on_progress(fraction: float, done: int | None = None, total: int | None = None) -> None:
            self.board.publish(
                progress=fraction, samples=(done, total) if done is not None and total else None
            )
            step = int(fraction * 4)
            if step > last_logged[0]:
                last_logged[0] = step
                log.info("[Worker] Rendering job %s: %d%%", job_id, round(fraction * 100))

        return on_progress


def warm_engine(engine: str, *, on_gpu: bool) -> str:
    """What a standby warms up with for a job of ``engine``: Cycles loads its kernels. On a GPU an EEVEE
    job's standby warms up with EEVEE (its shaders compile beside the running render). In software GL
    a tiny EEVEE frame costs 1.9 s of CPU the running render needs (beside it, a stream of 64x48 EEVEE
    frames took 1.35 of a bare loop's time), where Workbench's 0.6 s sets up the GL context both engines
    share (0.83), so it warms up with Workbench there."""
    if engine == "CYCLES":
        return "CYCLES"
    return "EEVEE" if on_gpu and engine == "EEVEE" else "WORKBENCH"


SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "swiftshader", "lavapipe", "unknown gpu context")


def on_gpu(device: str) -> bool:
    """Whether a render ran on a GPU (Cycles on a GPU, or EEVEE/Workbench on a hardware GL/Vulkan/Metal
    context), from the child's words for it: software GL and Cycles on the CPU keep the cores busy, so
    the next standby warms up with the lightest engine there (``warm_engine``)."""
    words = device.strip().lower()
    return bool(words) and words != "cpu" and not any(name in words for name in SOFTWARE_RENDERERS)


def standby_words(standby: Standby) -> str:
    parked = standby.parked_seconds
    if parked is None:
        return "still starting up"
    if standby.warm_skipped:
        return f"started in {parked:.1f}s, its job already waiting: no warm-up frame"
    return f"started and warmed up in {parked:.1f}s before the job"


def log_missing_files(job_id: str, missing: tuple[str, ...]) -> None:
    """One warning per file the scene names that does not exist here; the job record keeps the list.

    Rendering without them is what Blender itself does (a missing texture shows pink): the creator
    forgot to pack it, or it sits outside the job folder where the sandbox hides it.
    """
    for entry in missing[:MISSING_FILES_LOGGED]:
        log.warning(
            "[Worker] Job %s: the scene names a file that does not exist here; rendered without it: %s",
            job_id,
            entry,
            extra={"job_id": job_id},
        )
    if len(missing) > MISSING_FILES_LOGGED:
        log.warning(
            "[Worker] Job %s: and %d more missing files (the job record lists them all)",
            job_id,
            len(missing) - MISSING_FILES_LOGGED,
            extra={"job_id": job_id},
        )
