"""Checking a result: is this PNG what the named worker rendered for the named job, from its scene?

``verify`` runs each check in turn and names what does not match:

1. the receipt is there and readable (``VeriFrame-Receipt``, see ``proof/receipt.py``);
2. the image data hashes to what the receipt says (pixels changed, or a receipt moved from another PNG);
3. the signature verifies against the public key the backend holds for the receipt's worker address;
4. the backend's job has this asset CID, is completed by that worker, and its result is this very file;
5. with ``rerender``: the asset, fetched by CID and verified, rendered again in the sandbox with the
   receipt's settings in a Blender of its release gives the same image data, or across devices a PSNR
   of at least ``PSNR_THRESHOLD`` dB, the pixels decoded by Blender itself.

The backend and IPFS are only read: ``GET /workers/{address}`` and ``GET /jobs/{id}`` are public.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from ..config import WorkerConfig
from ..errors import RenderError, WorkerError
from ..ipfs.cid import cid_of_bytes, parse_cid
from ..ipfs.client import IpfsClient
from ..proof.png_chunks import PngError, dimensions, image_sha256
from ..proof.receipt import RECEIPT_FORMAT, SignedReceipt, extract, signature_valid
from ..render.inventory import BlenderInventory, InstalledBlender
from ..render.sandbox import run_probe
from ..scene.blend_header import BlendVersion, read_blend_version
from ..scene.job_settings import RenderSettings
from ..scene.unpack import prepare_blend

log = logging.getLogger("veriframe.verify")

PSNR_THRESHOLD = 40.0  # dB: the same scene on another device differs by noise, another scene by far more

# Runs in the verifier's own Blender on two PNGs it copied: decodes both and prints their PSNR.
PSNR_CODE = (
    "import bpy, json, math, sys\n"
    "import numpy as np\n"
    "args = sys.argv[sys.argv.index('--') + 1:] if '--' in sys.argv else sys.argv[1:]\n"
    "a, b = (bpy.data.images.load(path) for path in args[:2])\n"
    "if tuple(a.size) != tuple(b.size):\n"
    "    out = {'error': f'the sizes differ: {tuple(a.size)} and {tuple(b.size)}'}\n"
    "else:\n"
    "    pa = np.empty(len(a.pixels), dtype=np.float32); a.pixels.foreach_get(pa)\n"
    "    pb = np.empty(len(b.pixels), dtype=np.float32); b.pixels.foreach_get(pb)\n"
    "    mse = float(((pa - pb) ** 2).mean())\n"
    "    out = {'mse': mse, 'psnr': None if mse == 0 else 10 * math.log10(1.0 / mse)}\n"
    "print('VERIFRAME-PSNR', json.dumps(out), flush=True)\n"
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    source: str
    checks: list[Check] = field(default_factory=list)
    receipt: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "verified": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "receipt": self.receipt,
        }


class Verifier:
    def __init__(
        self,
        backend_url: str,
        ipfs: IpfsClient,
        *,
        config: WorkerConfig | None = None,
        timeout: float = 30.0,
        blenders: Callable[[], BlenderInventory] | None = None,
    ) -> None:
        self.backend_url = backend_url.rstrip("/")
        self.ipfs = ipfs
        self.config = config
        self.timeout = timeout
        self.session = requests.Session()
        self._blenders = blenders

    # -- reading the input ----------------------------------------------------------------------------
    def load(self, cid_or_file: str, folder: Path) -> tuple[bytes, str | None]:
        """The PNG's bytes and its CID when known (a file's is computed later, against the job's)."""
        path = Path(cid_or_file)
        if path.is_file():
            return path.read_bytes(), None
        parse_cid(cid_or_file)  # InvalidCid: neither a file nor a CID
        dest = folder / "result.png"
        self.ipfs.download(cid_or_file, dest)  # verified against the CID while it streams
        return dest.read_bytes(), cid_or_file

    # -- the checks -----------------------------------------------------------------------------------
    def verify(self, cid_or_file: str, *, rerender: bool = False) -> Verdict:
        verdict = Verdict(cid_or_file)
        with tempfile.TemporaryDirectory(prefix="veriframe-verify-") as temp:
            folder = Path(temp)
            try:
                png, cid = self.load(cid_or_file, folder)
            except (WorkerError, OSError) as exc:
                verdict.add("result", False, f"cannot read {cid_or_file}: {exc}")
                return verdict
            signed = self._check_receipt(verdict, png)
            if signed is None:
                return verdict
            receipt = signed.receipt
            self._check_image(verdict, png, receipt)
            worker = self._check_signature(verdict, signed)
            self._check_job(verdict, png, cid, receipt, worker)
            if rerender:
                self._check_rerender(verdict, png, receipt, folder)
        return verdict

    def _check_receipt(self, verdict: Verdict, png: bytes) -> SignedReceipt | None:
        try:
            signed = extract(png)
        except PngError as exc:
            verdict.add("receipt", False, f"not a readable PNG: {exc}")
            return None
        except (ValueError, KeyError) as exc:
            verdict.add("receipt", False, f"the VeriFrame-Receipt chunk is malformed ({exc})")
            return None
        if signed is None:
            verdict.add("receipt", False, "no receipt: the PNG carries no VeriFrame-Receipt chunk")
            return None
        receipt = signed.receipt
        verdict.receipt = receipt
        if receipt.get("format") != RECEIPT_FORMAT:
            verdict.add("receipt", False, f"receipt format {receipt.get('format')!r} is not {RECEIPT_FORMAT}")
            return None
        verdict.add(
            "receipt",
            True,
            f"job {receipt.get('job_id')}, worker {receipt.get('worker_address')}, Blender "
            f"{receipt.get('blender')}, {receipt.get('engine')} on {receipt.get('device')}",
        )
        return signed

    def _check_image(self, verdict: Verdict, png: bytes, receipt: dict[str, Any]) -> bool:
        actual, claimed = image_sha256(png), str(receipt.get("image_sha256"))
        size = list(dimensions(png))
        if size != receipt.get("resolution"):
            return verdict.add(
                "image",
                False,
                f"a receipt moved from another PNG: this image is {size[0]}x{size[1]}, the receipt's is "
                f"{'x'.join(str(n) for n in receipt.get('resolution') or ['?'])}",
            )
        if actual == claimed:
            return verdict.add("image", True, f"the image data matches the receipt (SHA-256 {actual[:16]}…)")
        return verdict.add(
            "image",
            False,
            f"tampered pixels: the image data hashes to {actual[:16]}…, the receipt says {claimed[:16]}… "
            "(pixels changed, or the receipt was moved from another PNG of the same size)",
        )

    def _get(self, path: str) -> dict[str, Any] | None:
        response = self.session.get(f"{self.backend_url}{path}", timeout=self.timeout)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body = response.json()
        return body if isinstance(body, dict) else None

    def _check_signature(self, verdict: Verdict, signed: SignedReceipt) -> dict[str, Any] | None:
        address = str(signed.receipt.get("worker_address"))
        try:
            worker = self._get(f"/workers/{address}")
        except (requests.RequestException, ValueError) as exc:
            verdict.add("signature", False, f"cannot ask the backend for worker {address}: {exc}")
            return None
        if worker is None or not worker.get("public_key"):
            verdict.add("signature", False, f"the backend knows no worker {address} (or no key for it)")
            return worker
        try:
            public_key = int(str(worker["public_key"]), 16)
        except ValueError:
            verdict.add("signature", False, f"the backend's public key for {address} is not a hex number")
            return worker
        if signature_valid(signed, public_key):
            verdict.add("signature", True, f"signed by worker {address}'s key, as the backend holds it")
        else:
            verdict.add(
                "signature",
                False,
                f"signed by another key: the signature does not verify against the public key the backend "
                f"holds for worker {address} (another key signed it, or the receipt was altered)",
            )
        return worker

    def _check_job(
        self, verdict: Verdict, png: bytes, cid: str | None, receipt: dict[str, Any], worker: dict | None
    ) -> None:
        job_id = str(receipt.get("job_id"))
        try:
            job = self._get(f"/jobs/{job_id}")
        except (requests.RequestException, ValueError) as exc:
            verdict.add("job", False, f"cannot ask the backend for job {job_id}: {exc}")
            return
        if job is None:
            verdict.add("job", False, f"the backend has no job {job_id}")
            return
        problems = []
        asset = job.get("full_asset_cid")
        if asset != receipt.get("asset_cid"):
            problems.append(
                f"a different scene: job {job_id}'s asset is {asset}, the receipt names "
                f"{receipt.get('asset_cid')}"
            )
        if job.get("status") != "completed":
            problems.append(f"job {job_id} is {job.get('status')}, not completed")
        if worker is not None and job.get("worker_id") != worker.get("id"):
            problems.append(f"job {job_id} was not completed by worker {receipt.get('worker_address')}")
        result = job.get("full_result_cid")
        if not self._same_file(png, cid, result):
            shown = cid or "this file"
            problems.append(
                f"receipt copied from another job: job {job_id}'s result is {result}, not {shown}"
            )
        if problems:
            verdict.add("job", False, "; ".join(problems))
        else:
            verdict.add(
                "job", True, f"job {job_id} is completed by this worker with this very file ({result})"
            )

    @staticmethod
    def _same_file(png: bytes, cid: str | None, result: object) -> bool:
        if not isinstance(result, str) or not result:
            return False
        if cid is not None:
            return cid == result
        try:
            wanted = parse_cid(result)
        except WorkerError:
            return False
        return str(cid_of_bytes(png, wanted.version)) == result

    # -- re-rendering ---------------------------------------------------------------------------------
    def _check_rerender(self, verdict: Verdict, png: bytes, receipt: dict[str, Any], folder: Path) -> None:
        try:
            detail, ok = self._rerender(png, receipt, folder)
        except (WorkerError, OSError, ValueError, TypeError) as exc:
            detail, ok = f"could not re-render: {exc}", False
        verdict.add("rerender", ok, detail)

    def _rerender(self, png: bytes, receipt: dict[str, Any], folder: Path) -> tuple[str, bool]:
        if self.config is None or self._blenders is None:
            raise RenderError("re-rendering needs the node's Blenders (BLENDER_PATH)")
        job_dir = folder / "rerender"  # the render's sandbox sees this folder only, as a job's would
        job_dir.mkdir()
        self.ipfs.download(str(receipt["asset_cid"]), job_dir / "asset")  # verified against the CID
        blend = prepare_blend(job_dir / "asset", job_dir / "scene", self.config.limits.max_unpacked_bytes)
        inventory = self._blenders()
        release = BlendVersion.parse(".".join(str(receipt.get("blender", "")).split(".")[:2]))
        blender = inventory.for_release(release) or inventory.for_file(read_blend_version(blend))
        settings = RenderSettings(**receipt["settings"])
        result = inventory.renderer_for(blender).render(blend, job_dir, settings)
        ours = result.output.read_bytes()
        where = f"Blender {result.blender} on {result.device}"
        if image_sha256(ours) == receipt.get("image_sha256"):
            return f"re-rendered in {where}: identical image data", True
        psnr = self._psnr(blender, ours, png, folder)
        same_release = result.blender == receipt.get("blender")
        if psnr is not None and psnr >= PSNR_THRESHOLD:
            return (
                f"re-rendered in {where}: not identical, PSNR {psnr:.1f} dB (at least {PSNR_THRESHOLD:g})",
                True,
            )
        shown = "another image size" if psnr is None else f"PSNR {psnr:.1f} dB"
        release_note = "" if same_release else f" (the receipt says Blender {receipt.get('blender')})"
        return (
            f"a different image: re-rendered in {where}{release_note}, the result differs ({shown}, below "
            f"{PSNR_THRESHOLD:g}): not this scene, or not these settings",
            False,
        )

    def _psnr(self, blender: InstalledBlender, ours: bytes, theirs: bytes, folder: Path) -> float | None:
        """PSNR of two PNGs decoded by ``blender`` in its sandbox; inf when identical, None if unknown."""
        work = folder / "compare"
        work.mkdir()
        (work / "ours.png").write_bytes(ours)
        (work / "theirs.png").write_bytes(theirs)
        command = blender.command
        if command.uses_bpy_module:
            argv = [
                command.executable,
                "-I",
                "-c",
                PSNR_CODE,
                str(work / "ours.png"),
                str(work / "theirs.png"),
            ]
        else:
            argv = [
                command.executable,
                "-b",
                "--factory-startup",
                "--offline-mode",
                "--python-expr",
                PSNR_CODE,
                "--",
                str(work / "ours.png"),
                str(work / "theirs.png"),
            ]
        done = _run_readable(argv, blender, work)
        for line in done.stdout.splitlines():
            if line.startswith("VERIFRAME-PSNR "):
                facts = json.loads(line.split(" ", 1)[1])
                if "error" in facts:
                    return None
                return math.inf if facts["psnr"] is None else float(facts["psnr"])
        raise RenderError(f"Blender did not compare the images: {(done.stdout + done.stderr)[-500:]}")


def _run_readable(argv: list[str], blender: InstalledBlender, folder: Path) -> subprocess.CompletedProcess:
    """Runs ``argv`` like a probe, in the Blender's sandbox, with ``folder`` (the two images) bound in."""
    if blender.sandbox is None:
        return run_probe(argv, None, timeout=120)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "TMPDIR": str(folder)}
    wrapped = blender.sandbox.wrap(argv, writable=[folder], cwd=folder)
    return subprocess.run(
        wrapped, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env
    )
