"""Every honest scene renders: files Blender ships, and what users do to them every day.

The corpus (``tests/honest_corpus.py``) is the default scene saved by each test Blender (the bpy modules
4.2, 4.5 and 5.0, and the 4.3 binary) and every app template's ``startup.blend`` they ship, byte for byte,
plus scenes with an object pasted through the copy buffer, a material appended from an asset library,
an essentials node group linked, an image whose path exists nowhere, an unused image pointing outside
the job, an import node reading a file in the job's zip, and no camera with the sequencer or the
compositor making the picture. Each goes through the real worker against devnet, sandboxed and not.

What Blender itself makes of each file is the reference: plain Blender renders it with the job's
settings, no checks. A file Blender renders must complete and its PNG must match Blender's; a file
Blender cannot render (a template without a camera) must fail with Blender's own reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from buildtools import bpy_matrix
from devnet.__main__ import add_file, create_job
from devnet.keys import load_keypair
from devnet.process import ROOT, Devnet
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr
from veriframe_addon.worker.scene.blend_header import BlendVersion, read_blend_version

from .conftest import run_worker, worker_env

CORPUS = Path(__file__).resolve().parent / "honest_corpus.py"
SETTINGS = {"resolution_percentage": 4, "samples": 1}  # 1920x1080 scenes render at 76x43
# The largest mean difference per channel (0-255) between the worker's PNG and Blender's own render
# of the same file: the same Blender and GL on the same machine, so in practice they are identical.
MAX_MEAN_DIFFERENCE = 1.0
RENDERED = re.compile(
    r"Render successful: .*/jobs/([0-9a-f-]+)/render/render0001\.png \(\d+x\d+, \w+, ([\d.]+)s[,)]"
)


@dataclass
class Entry:
    name: str
    asset: Path  # what is uploaded: a .blend, or a zip
    scene: Path  # the .blend inside it, for the reference render
    facts: dict
    reference_png: Path | None = None
    reference_error: str | None = None
    renders_in: str | None = None  # the release the worker picks for it (its own, else the oldest newer)


def _json_line(done: subprocess.CompletedProcess[str]) -> list[dict]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(argv: list[str]) -> list[dict]:
    return _json_line(subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300))


def _shipped_by_every_blender(out: Path, request: pytest.FixtureRequest) -> list[dict]:
    """The default scene and app templates of each test Blender that this machine has."""
    pythons, failures = bpy_matrix.read_environment(os.environ)
    files = _run([sys.executable, str(CORPUS), "shipped", str(out / "4.5")])
    for release in ("4.2", "5.0"):
        if release not in pythons:
            pytest.fail(f"bpy {release} is not set up ({failures.get(release, 'not provisioned')})")
        files += _run([pythons[release], str(CORPUS), "shipped", str(out / release)])
    try:
        binary = request.getfixturevalue("blender_binary")
    except pytest.skip.Exception as skipped:
        pytest.fail(f"the Blender binary is missing: {skipped}")
    argv = [
        str(binary),
        "-b",
        "--factory-startup",
        "--python",
        str(CORPUS),
        "--",
        "shipped",
        str(out / "bin"),
    ]
    return files + _run(argv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> list[Entry]:
    root = tmp_path_factory.mktemp("corpus")
    files = _shipped_by_every_blender(root / "shipped", request)
    files += _run([sys.executable, str(CORPUS), "made", str(root / "made"), str(root / "outside")])
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for facts in files:
        asset = Path(facts["asset"])
        digest = hashlib.sha256(asset.read_bytes()).hexdigest()
        if digest in seen:  # Blender 4.2, 4.3 and 4.5 ship the same template files: render each once
            print(f"{facts['name']}: the same bytes as {seen[digest]}")
            continue
        seen[digest] = facts["name"]
        entries.append(Entry(facts["name"], asset, Path(facts.get("scene", asset)), facts))
    # Each reference is rendered by the Blender the worker will pick for that file (its own release, else
    # the oldest newer one), so the comparison is Blender against the worker in the same Blender.
    (root / "reference").mkdir()
    pythons = _bpy_pythons()
    by_release: dict[str, list[tuple[int, Entry]]] = {}
    for index, entry in enumerate(entries):
        by_release.setdefault(_renders_in(read_blend_version(entry.scene)), []).append((index, entry))
    for release, group in sorted(by_release.items()):
        spec = {
            "files": [{"scene": str(e.scene), "png": str(root / "reference" / f"{i}.png")} for i, e in group],
            **SETTINGS,
        }
        spec_path = root / f"spec-{release}.json"
        spec_path.write_text(json.dumps(spec))
        results = _run([pythons[release], str(CORPUS), "reference", str(spec_path)])
        for (_, entry), result in zip(group, results, strict=True):
            entry.reference_png = Path(result["png"]) if "png" in result else None
            entry.reference_error = result.get("error")
            entry.renders_in = release
    return entries


def _bpy_pythons() -> dict[str, str]:
    """The worker's Blenders in this test: the bpy 4.2, 4.5 and 5.0 modules (each runs in the sandbox)."""
    pythons, failures = bpy_matrix.read_environment(os.environ)
    for release in ("4.2", "5.0"):
        if release not in pythons:
            pytest.fail(f"bpy {release} is not set up ({failures.get(release, 'not provisioned')})")
    return {"4.2": pythons["4.2"], "4.5": sys.executable, "5.0": pythons["5.0"]}


def _renders_in(saved_by: BlendVersion) -> str:
    """The release of ``_bpy_pythons`` that opens a file saved by ``saved_by``, by the worker's rule."""
    releases = [BlendVersion.parse(r) for r in ("4.2", "4.5", "5.0")]
    return str(min(r for r in releases if r >= saved_by))


def _submit(devnet: Devnet, asset: Path) -> str:
    admin = load_keypair(devnet.data / "admin.json")
    cid = add_file(api_url_from_multiaddr(devnet.env["IPFS_API"]), asset)
    job = create_job(devnet.backend_url, admin.address, cid, reward=1, settings=json.dumps(SETTINGS))
    return str(job["id"])


def _difference(a: Path, b: Path) -> float:
    with Image.open(a) as first, Image.open(b) as second:
        assert first.size == second.size, f"{first.size} != {second.size}"
        diff = ImageChops.difference(first.convert("RGBA"), second.convert("RGBA"))
    return max(ImageStat.Stat(diff).mean)


def _share_where(png: Path, test) -> float:
    with Image.open(png) as image:
        data = image.convert("RGB").tobytes()
    pixels = [tuple(data[i : i + 3]) for i in range(0, len(data), 3)]
    return sum(1 for p in pixels if test(p)) / len(pixels)


def test_every_honest_scene_renders_as_blender_renders_it(
    corpus: list[Entry], devnet: Devnet, sandbox: str, tmp_path: Path
) -> None:
    jobs = {_submit(devnet, entry.asset): entry for entry in corpus}
    env = worker_env(
        devnet,
        tmp_path / "data",
        RENDER_SANDBOX=sandbox,
        BLENDER_PATH=os.pathsep.join(_bpy_pythons().values()),
    )
    run = run_worker(env, "--max-jobs", str(len(jobs)), timeout=900)
    log = run.output
    assert run.returncode == 0, log[-5000:]
    seconds = {m.group(1): float(m.group(2)) for m in RENDERED.finditer(log)}

    outcomes = []
    for job_id, entry in jobs.items():
        job = requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()
        if entry.reference_error is None:
            assert job["status"] == "completed", f"{entry.name}: {_failure(log, job_id)}"
            rendered = next(ln for ln in log.splitlines() if f"/jobs/{job_id}/render/render0001.png (" in ln)
            assert f"Blender {entry.renders_in}." in rendered, (entry.name, rendered)
            png = tmp_path / f"{job_id}.png"
            png.write_bytes(
                requests.get(f"{devnet.env['IPFS_GATEWAY']}/{job['full_result_cid']}", timeout=10).content
            )
            assert entry.reference_png is not None
            difference = _difference(png, entry.reference_png)
            assert difference <= MAX_MEAN_DIFFERENCE, (
                f"{entry.name}: differs from Blender's render by {difference}"
            )
            outcomes.append(
                (entry.name, f"completed in {seconds[job_id]:.1f} s, PNG = Blender's (diff {difference:.2f})")
            )
        else:
            reason = _failure(log, job_id)
            assert job["status"] != "completed", entry.name
            said = entry.reference_error.removeprefix("Error: ")
            assert said in reason, f"{entry.name}: Blender says {said!r}, the worker {reason!r}"
            outcomes.append((entry.name, f"failed as in Blender: {reason}"))
    _check_the_everyday_cases(jobs, log, tmp_path)
    print(f"\ncorpus, {sandbox}:\n" + "\n".join(f"  {name}: {outcome}" for name, outcome in outcomes))


def _failure(log: str, job_id: str) -> str:
    return next(
        (ln.split(" failed: ", 1)[1] for ln in log.splitlines() if f"✗ Job {job_id} failed: " in ln),
        "no failure logged",
    )


def _check_the_everyday_cases(jobs: dict[str, Entry], log: str, tmp_path: Path) -> None:
    """What each made case must show beyond matching Blender: its own point, in its own picture."""
    by_name = {entry.name: (job_id, entry) for job_id, entry in jobs.items()}
    # The missing texture is warned about once, by its path, and Blender's magenta shows where it is.
    job_id, entry = by_name["image whose absolute path exists nowhere"]
    warned = [
        ln
        for ln in log.splitlines()
        if f"Job {job_id}: the scene names a file that does not exist here" in ln
    ]
    assert len(warned) == 1 and entry.facts["missing"] in warned[0], log
    assert _share_where(tmp_path / f"{job_id}.png", lambda p: p[0] > 120 and p[2] > 120 and p[1] < 60) > 0.02
    # What the import node read from the zip is in the frame, in its cyan (through the view transform).
    job_id, _ = by_name["import node reading a file in the job's zip"]
    assert _share_where(tmp_path / f"{job_id}.png", lambda p: p[1] > p[0] + 40 and p[2] > p[0] + 40) > 0.1
    # No camera: the sequencer's orange strip and the compositor's blue are the whole frame.
    job_id, _ = by_name["no camera, the sequencer makes the image"]
    assert _share_where(tmp_path / f"{job_id}.png", lambda p: p[0] > p[1] + 40 > p[2] + 40) > 0.99
    job_id, _ = by_name["no camera, the compositor makes the image"]
    assert _share_where(tmp_path / f"{job_id}.png", lambda p: p[2] > p[0] + 60) > 0.99
    # Weak references (copy buffer, asset library) and the essentials link are not warned about either.
    for name in (
        "object pasted through the copy buffer",
        "material appended from an asset library",
        "essentials node group linked",
        "unused image with an outside path",
    ):
        job_id, _ = by_name[name]
        assert f"Job {job_id}: the scene names a file that does not exist here" not in log, name


def test_the_corpus_is_what_it_claims(corpus: list[Entry]) -> None:
    """Every test Blender's default scene is in it, and templates from each, and the weak references and
    outside files the everyday cases carry really exist where the worker runs (so they would have been
    refused by a check that judged by mention)."""
    names = [e.name for e in corpus]
    for version in ("4.2", "4.3", "4.5", "5.0"):
        assert f"default scene saved by {version}" in names
    assert sum("template of" in n for n in names) >= 9  # 4 shared by 4.2-4.5, 5 of 5.0
    facts = {e.name: e.facts for e in corpus}
    for name in ("object pasted through the copy buffer", "material appended from an asset library"):
        assert all(Path(p).is_file() for p in facts[name]["weak_references"]), facts[name]
    assert Path(facts["unused image with an outside path"]["outside"]).is_file()
    assert Path(facts["essentials node group linked"]["library"]).is_file()
    assert not Path(facts["image whose absolute path exists nowhere"]["missing"]).exists()
    with zipfile.ZipFile(facts["import node reading a file in the job's zip"]["asset"]) as zf:
        assert sorted(zf.namelist()) == ["data/panel.obj", "scene.blend"]
