"""Verifiable frames: every result carries a receipt signed by the worker's real Stark key, and
``verify`` checks it against the devnet backend, fetching by CID from the devnet gateway.

Each tampering fails with its own reason; ``--rerender`` reproduces an EEVEE and a Cycles job bit for
bit on this machine and turns down pixels rendered from another scene.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image, PngImagePlugin

from devnet.keys import new_keypair, sign
from devnet.process import ROOT, Devnet
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.ipfs.client import client_from_config
from veriframe_addon.worker.ops.verify import Verifier
from veriframe_addon.worker.proof.png_chunks import image_sha256, read_itxt, without_itxt
from veriframe_addon.worker.proof.receipt import (
    RECEIPT_KEYWORD,
    SignedReceipt,
    build_receipt,
    embed,
    extract,
    receipt_felt,
    signature_valid,
)

from .conftest import oldest_bpy_python, run_worker, worker_env

WORKBENCH = '{"engine": "WORKBENCH"}'


def png_bytes(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **params)
    return out.getvalue()


def signed_by(private_key: int, receipt: dict) -> SignedReceipt:
    r, s = sign(receipt_felt(receipt), private_key)
    return SignedReceipt(receipt, (r, s))


# -- the receipt itself -------------------------------------------------------------------------------
def test_the_image_hash_ignores_metadata_and_sees_one_pixel() -> None:
    image = Image.new("RGB", (8, 6), "navy")
    plain = png_bytes(image)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "added by another tool")
    assert image_sha256(png_bytes(image, pnginfo=info)) == image_sha256(plain)
    image.putpixel((3, 2), (0, 0, 129))
    assert image_sha256(png_bytes(image)) != image_sha256(plain)


def test_a_sealed_png_still_opens_everywhere_and_sealing_twice_gives_the_same_bytes() -> None:
    keys = new_keypair()
    png = png_bytes(Image.new("RGBA", (5, 4), (10, 20, 30, 255)))
    receipt = build_receipt(
        png=png,
        job_id="j",
        asset_cid="Qm",
        worker_address=keys.address,
        blender="4.5.15",
        engine="EEVEE",
        device="CPU",
        frame=1,
        resolution=(5, 4),
        settings={"engine": "EEVEE"},
    )
    sealed = embed(png, signed_by(keys.private_key, receipt))
    assert embed(sealed, signed_by(keys.private_key, receipt)) == sealed  # deterministic, idempotent
    opened = Image.open(io.BytesIO(sealed))
    assert opened.size == (5, 4) and RECEIPT_KEYWORD in opened.text  # Pillow reads the iTXt chunk too
    assert image_sha256(sealed) == image_sha256(png) == receipt["image_sha256"]
    found = extract(sealed)
    assert found is not None and signature_valid(found, keys.public_key)
    assert not signature_valid(found, new_keypair().public_key)
    assert read_itxt(without_itxt(sealed, RECEIPT_KEYWORD), RECEIPT_KEYWORD) is None


# -- end to end ---------------------------------------------------------------------------------------
def verify_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veriframe_addon", "verify", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def fetch(devnet: Devnet, cid: str) -> bytes:
    response = requests.get(f"{devnet.env['IPFS_GATEWAY']}/{cid}", timeout=30)
    response.raise_for_status()
    return response.content


def job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


@pytest.fixture
def completed(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> dict:
    """Two jobs of the sample scene completed by one worker, at two sizes (so their results differ)."""
    half = '{"engine": "WORKBENCH", "resolution_percentage": 50}'
    ids = [
        devnet.cli("submit", str(sample_blend), "--settings", settings).strip()
        for settings in (WORKBENCH, half)
    ]
    env = worker_env(devnet, tmp_path / "worker")
    run = run_worker(env, "--max-jobs", "2")
    assert run.returncode == 0, run.output[-3000:]
    assert run.output.count("Receipt signed into") == 2
    return {"ids": ids, "env": env, "results": [job(devnet, i)["full_result_cid"] for i in ids]}


def test_a_result_verifies_by_cid_and_every_tampering_fails_with_its_own_reason(
    devnet: Devnet, completed: dict, tmp_path: Path
) -> None:
    env, (first, second), (cid, other_cid) = completed["env"], completed["ids"], completed["results"]
    verifier_env = {k: v for k, v in env.items() if k not in {"WORKER_PRIVATE_KEY", "WORKER_ADDRESS"}}
    shown = verify_cli(verifier_env, cid)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "verified: every check passed" in shown.stdout
    assert shown.stdout.count("[ OK ]") == 4  # receipt, image, signature, job
    document = json.loads(verify_cli(verifier_env, cid, "--json").stdout)
    assert document["verified"] and document["receipt"]["job_id"] == first

    png = fetch(devnet, cid)
    signed = extract(png)
    assert signed is not None
    key = int(env["WORKER_PRIVATE_KEY"], 16)
    config = load_config(environ=env)
    verifier = Verifier(config.backend_url, client_from_config(config))

    def failing(data: bytes) -> dict[str, str]:
        path = tmp_path / "tampered.png"
        path.write_bytes(data)
        verdict = verifier.verify(str(path))
        assert not verdict.ok
        return {check.name: check.detail for check in verdict.checks if not check.ok}

    # One pixel changed, the image data re-encoded, the receipt kept.
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    image.putpixel((1, 1), (255, 0, 255, 255))
    assert failing(embed(png_bytes(image), signed))["image"].startswith("tampered pixels")
    # The receipt moved to another PNG.
    moved = failing(embed(png_bytes(Image.new("RGB", (10, 10), "green")), signed))
    assert moved["image"].startswith("a receipt moved from another PNG")
    # The same receipt signed by another key (a new signature is a new file, too: not the job's result).
    forged = failing(embed(png, signed_by(new_keypair().private_key, signed.receipt)))
    assert forged["signature"].startswith("signed by another key") and "image" not in forged
    # Signed by the worker, but naming the other job it did (whose result is another file).
    other_job = failing(embed(png, signed_by(key, {**signed.receipt, "job_id": second})))
    assert set(other_job) == {"job"} and other_job["job"].startswith("receipt copied from another job")
    assert other_cid in other_job["job"]
    # Signed by the worker, but naming another scene's asset.
    scene = failing(
        embed(
            png,
            signed_by(key, {**signed.receipt, "asset_cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}),
        )
    )
    assert set(scene) == {"job"} and scene["job"].startswith("a different scene")
    # The receipt removed.
    assert failing(without_itxt(png, RECEIPT_KEYWORD))["receipt"].startswith("no receipt")


def moved_cube_scene(source: Path, out: Path) -> Path:
    """The sample scene with its cube moved: another scene, same size, saved by the oldest test Blender."""
    code = (
        "import bpy, sys\n"
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False)\n"
        "cube = next(o for o in bpy.data.objects if o.type == 'MESH' and o.dimensions.z > 1)\n"
        "cube.location.x += 2.0\n"
        "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])\n"
    )
    subprocess.run(
        [oldest_bpy_python(), "-c", code, str(source), str(out)], check=True, capture_output=True, timeout=120
    )
    return out


def test_rerender_reproduces_eevee_and_cycles_bit_for_bit_and_turns_down_another_scene(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    other_scene = moved_cube_scene(sample_blend, tmp_path / "moved.blend")
    eevee = devnet.cli("submit", str(sample_blend), "--settings", '{"engine": "EEVEE", "samples": 2}').strip()
    cycles = devnet.cli(
        "submit", str(sample_blend), "--settings", '{"engine": "CYCLES", "samples": 2}'
    ).strip()
    moved = devnet.cli("submit", str(other_scene), "--settings", '{"engine": "EEVEE", "samples": 2}').strip()
    env = worker_env(devnet, tmp_path / "worker")
    run = run_worker(env, "--max-jobs", "3")
    assert run.returncode == 0, run.output[-3000:]
    verifier_env = {k: v for k, v in env.items() if k != "WORKER_PRIVATE_KEY"}

    for job_id in (eevee, cycles):
        shown = verify_cli(verifier_env, job(devnet, job_id)["full_result_cid"], "--rerender")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "[ OK ] rerender: re-rendered in Blender" in shown.stdout
        assert "identical image data" in shown.stdout

    # The moved-cube scene's pixels under a receipt for the EEVEE job: signed by the worker itself.
    eevee_png = fetch(devnet, job(devnet, eevee)["full_result_cid"])
    moved_png = fetch(devnet, job(devnet, moved)["full_result_cid"])
    receipt = {**extract(eevee_png).receipt, "image_sha256": image_sha256(moved_png)}
    forged = tmp_path / "forged.png"
    forged.write_bytes(embed(moved_png, signed_by(int(env["WORKER_PRIVATE_KEY"], 16), receipt)))
    shown = verify_cli(verifier_env, str(forged), "--rerender", "--json")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    checks = {c["name"]: c for c in json.loads(shown.stdout)["checks"]}
    assert checks["image"]["ok"] and checks["signature"]["ok"]  # the forgery is well made...
    assert not checks["rerender"]["ok"] and checks["rerender"]["detail"].startswith("a different image")
