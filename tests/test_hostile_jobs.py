"""Every hostile input in the README's security table, run through the real worker against devnet.

Each test builds its scene or archive with ``bpy`` (``tests/hostile_scenes.py``), submits it to a devnet
followed by an honest job, and runs the headless worker (real Blender via the ``bpy`` module) until the
honest job is done. It then checks that nothing escaped (no marker file written by the attack, nothing
new outside the job folders, no secret pixels in any published PNG), that the hostile job was not
completed with a result (it failed with the reason logged once, or was skipped unclaimed) unless the
input is one the worker neutralises and renders honestly, and that the same worker then completed the
honest job. Every case runs twice: inside the bwrap sandbox and without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Request, Response
from PIL import Image

from devnet.image_check import describe_sample_render
from devnet.process import ROOT, Devnet
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr

from .conftest import WorkerRun, run_worker_until, worker_env
from .servers import serve_app

HOSTILE = Path(__file__).resolve().parent / "hostile_scenes.py"


@dataclass(frozen=True)
class Case:
    """One hostile input: what to build, and what the worker must do with it.

    ``in_sandbox`` is the outcome and phrase under bwrap where they differ: a data-block's file outside
    the job folder does not exist inside the sandbox, so a scene naming one renders without it (nothing
    to leak, and the published frame is checked for the secret) instead of being refused. A node's path
    outside is refused in both.
    """

    name: str
    kind: str
    outcome: str  # "failed": claimed and failed; "skipped": never claimed; "rendered": neutralised
    says: str  # a phrase of the reason the worker must log
    settings: dict = field(default_factory=dict)
    lying_gateway: bool = False
    in_sandbox: tuple[str, str] | None = None

    def expected(self, sandbox: str) -> tuple[str, str]:
        return self.in_sandbox if sandbox == "bwrap" and self.in_sandbox else (self.outcome, self.says)


MISSING_TEXTURE_RGB = (255, 0, 255)  # what Blender draws for an image whose file is missing
MISSING_HERE = "does not exist here; rendered without it: /"  # the worker's warning for such a file
HIDDEN = ("rendered", MISSING_HERE)
IMPORT_REFUSED = "node 'Read Secret' in node group 'ReadSecret' names a file outside the job folder: /"


# Each of these is refused before any render (by the scene check, the caps or the unpacker), so one
# worker takes them all in one run per sandbox mode, as NODE_CASES are.
REFUSED_BEFORE_RENDER = (
    Case("registered text block", "text-block", "failed", "'autorun.py' is registered to run as Python"),
    Case("Python driver", "python-driver", "failed", "needs Python"),
    Case("Freestyle Python style module", "freestyle-script", "failed", "runs Python style modules"),
    Case("16384x16384 output", "huge-output", "failed", "16384x16384 (268.4 MP)"),
    Case("10^6 samples", "million-samples", "failed", "1000000 samples"),
    Case("zip slip", "zip-slip", "failed", "points outside the job folder"),
    Case("tar with a symlink out", "tar-symlink", "failed", "is a link or special file"),
    Case("1 GB-expanding archive", "zip-bomb", "failed", "a zip bomb"),
    Case("random bytes named .blend", "random-bytes", "failed", "unrecognised binary data"),
)

# Each of these renders in one sandbox mode at least, or needs a worker of its own (the lying gateway).
CASES = (
    Case("File Output node aimed outside", "file-output", "rendered", '"muted_file_outputs": 1'),
    Case("render.filepath aimed outside", "render-filepath", "rendered", '"replaced_filepath": "/'),
    Case(
        "image by absolute path", "image-absolute", "failed", "outside the job folder: /", in_sandbox=HIDDEN
    ),
    Case("image by //../.. path", "image-relative", "failed", "outside the job folder: /", in_sandbox=HIDDEN),
    Case("library by absolute path", "library-absolute", "failed", "lib.blend (pack it", in_sandbox=HIDDEN),
    Case("library by //../.. path", "library-relative", "failed", "lib.blend (pack it", in_sandbox=HIDDEN),
    Case(
        "10 000-frame request",
        "honest",
        "skipped",
        "asks for 10000 frames",
        settings={"frame_start": 1, "frame_end": 10000},
    ),
    Case("gateway serving other bytes", "honest", "failed", "does not match CID", lying_gateway=True),
)


NODE_CASES = (
    *(
        Case(f"Import {kind.upper()} node, constant path", f"import-{kind}", "failed", IMPORT_REFUSED)
        for kind in ("text", "csv", "obj", "ply", "stl", "vdb")
    ),
    Case(
        "Import Text node, path computed by String Join",
        "import-computed",
        "failed",
        "node 'Read Secret' in node group 'ReadSecret' reads a file whose path ('Path') is computed",
    ),
    Case(
        "Import Text node in a nested group",
        "import-nested",
        "failed",
        "node 'Read Secret' in node group 'ReadSecretInner' names a file outside the job folder: /",
    ),
    Case(
        "Import Text node in a linked library",
        "import-library",
        "failed",
        "node 'Read Secret' in node group 'LinkedReaderInner' (linked from lib.blend) names a file outside",
    ),
    Case(
        "IES Texture node, external file",
        "ies-outside",
        "failed",
        "node 'Lamp Profile' in light 'Spot' names a file outside the job folder: /",
    ),
)


def build(kind: str, out_dir: Path, outside: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(HOSTILE), kind, str(out_dir), str(outside)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def honest_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    return Path(build("honest", root / "scene", root / "outside")["asset"])


def _lying_ipfs(gateway: str, api: str, target: str) -> FastAPI:
    """A gateway and RPC API in one that serve other bytes for ``target`` and pass all else through."""
    app = FastAPI()
    lie = Response(b"BLENDER-v404 not the bytes the CID names", media_type="application/octet-stream")

    def relay(answer: requests.Response) -> Response:
        kind = answer.headers.get("content-type", "application/octet-stream")
        return Response(answer.content, status_code=answer.status_code, media_type=kind)

    @app.get("/ipfs/{cid}")
    def gateway_get(cid: str) -> Response:
        return lie if cid == target else relay(requests.get(f"{gateway}/{cid}", timeout=30))

    @app.post("/api/v0/{command}")
    async def rpc(command: str, request: Request) -> Response:
        if command == "cat" and request.query_params.get("arg") == target:
            return lie
        headers = {"content-type": request.headers.get("content-type", "application/octet-stream")}
        answer = requests.post(
            f"{api}/api/v0/{command}",
            params=request.query_params,
            data=await request.body(),
            headers=headers,
            timeout=30,
        )
        return relay(answer)

    return app


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _api_url(devnet: Devnet) -> str:
    return api_url_from_multiaddr(devnet.env["IPFS_API"])


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()} if root.exists() else set()


def _result_png(devnet: Devnet, job: dict, dest: Path) -> Path:
    dest.write_bytes(
        requests.get(f"{devnet.env['IPFS_GATEWAY']}/{job['full_result_cid']}", timeout=10).content
    )
    return dest


def _share(png: Path, rgb: tuple[int, int, int], rows: slice = slice(None), tolerance: int = 40) -> float:
    """The share of the pixels in ``rows`` within ``tolerance`` of ``rgb`` on every channel."""
    with Image.open(png) as image:
        picture = image.convert("RGB")
        ys = range(picture.height)[rows]
        pixels = [picture.getpixel((x, y)) for y in ys for x in range(picture.width)]
    close = sum(all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True)) for p in pixels)
    return close / len(pixels)


@dataclass
class Outcome:
    run: WorkerRun
    hostile: str
    honest: str
    built: dict


@pytest.fixture
def run_cases(devnet: Devnet, honest_asset: Path, sandbox: str, tmp_path: Path) -> Iterator:
    """Builds cases, submits them and then an honest job, runs one worker until the honest job is done.

    Each case is built into its own folder; they share OUTSIDE_DIR (``tmp_path / "outside"``), where the
    relative cases' ``//../../../outside/`` lands from a job folder.
    """

    def run(cases: tuple[Case, ...]) -> list[Outcome]:
        built = [build(c.kind, tmp_path / "scene" / c.kind, tmp_path / "outside") for c in cases]
        before = _files(tmp_path)
        hostile = []
        for case, made in zip(cases, built, strict=True):
            settings = ("--settings", json.dumps(case.settings)) if case.settings else ()
            hostile.append(devnet.cli("submit", made["asset"], *settings).strip())
        honest = devnet.cli("submit", str(honest_asset)).strip()
        overrides = {"RENDER_SANDBOX": sandbox}
        target = _job(devnet, hostile[0])["full_asset_cid"]
        with serve_app(_lying_ipfs(devnet.env["IPFS_GATEWAY"], _api_url(devnet), target)) as lie:
            if cases[0].lying_gateway:  # both sources lie about this CID: no honest copy to fall back on
                assert len(cases) == 1
                overrides |= {"IPFS_GATEWAY": f"{lie}/ipfs", "IPFS_API": lie}
            env = worker_env(devnet, tmp_path / "data", **overrides)
            timeout = 120 + 20 * len(cases)
            run = run_worker_until(env, f"✓ Successfully completed job {honest}", 1, timeout=timeout)

        # Nothing new anywhere but the devnet's store and the worker's own files and job folders.
        data = tmp_path / "data"
        allowed = (tmp_path / "devnet", *(data / "jobs" / job for job in (*hostile, honest)))
        # The worker's own files: its journal and log, the verified assets it keeps by CID, and its job
        # history with a thumbnail of each completed job's result.
        jobs = (*hostile, honest)
        cached = {data / "asset-cache" / _job(devnet, job)["full_asset_cid"] for job in jobs}
        history = data / "history"
        kept = {history / name for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm")}
        thumbnails = {history / "thumbnails" / f"{job}.png" for job in jobs}
        own_files = {data / "completed_jobs.json", data / "logs" / "worker.log", *cached, *kept, *thumbnails}
        new = {
            p
            for p in _files(tmp_path) - before
            if p not in own_files and not any(p.is_relative_to(a) for a in allowed)
        }
        assert new == set(), f"files appeared outside the job folders: {sorted(map(str, new))}"
        return [Outcome(run, job, honest, made) for job, made in zip(hostile, built, strict=True)]

    yield run


@pytest.mark.parametrize(
    "case", CASES, ids=[c.kind if not c.lying_gateway else "lying-gateway" for c in CASES]
)
def test_hostile_input_is_contained_and_the_worker_goes_on(
    case: Case, run_cases, devnet: Devnet, sandbox: str, tmp_path: Path
) -> None:
    [outcome] = run_cases((case,))
    assert_contained(case, outcome, devnet, sandbox, tmp_path)


def test_scenes_refused_before_their_render_fail_and_the_worker_goes_on(
    run_cases, devnet: Devnet, sandbox: str, tmp_path: Path
) -> None:
    """Python in the scene, caps exceeded, unsafe or bogus archives: one worker for all of them."""
    for case, outcome in zip(REFUSED_BEFORE_RENDER, run_cases(REFUSED_BEFORE_RENDER), strict=True):
        assert_contained(case, outcome, devnet, sandbox, tmp_path)


def test_every_node_file_path_outside_the_job_is_refused_naming_the_node(
    run_cases, devnet: Devnet, sandbox: str, tmp_path: Path
) -> None:
    """The node cases, one worker for all of them (each is refused before its render, so one run suffices).

    Refused in the sandbox too: a node's path outside the job is refused whether or not the file exists.
    """
    for case, outcome in zip(NODE_CASES, run_cases(NODE_CASES), strict=True):
        assert_contained(case, outcome, devnet, sandbox, tmp_path)


def assert_contained(case: Case, outcome: Outcome, devnet: Devnet, sandbox: str, tmp_path: Path) -> None:
    """No payload ran or escaped, the hostile job ended as ``case`` says, and the honest job completed."""
    log, hostile = outcome.run.output, outcome.hostile

    markers = tmp_path / "outside" / "markers"
    assert not markers.exists() or list(markers.iterdir()) == [], "the scene's Python ran"
    escape = outcome.built.get("escape_name")
    if escape:
        assert list(tmp_path.rglob(escape)) == [], "an archive member was written outside its folder"

    job = _job(devnet, hostile)
    job_dir = outcome.run.data_dir / "jobs" / hostile
    expected, says = case.expected(sandbox)
    secret = outcome.built.get("secret_rgb")
    if expected == "rendered":
        assert job["status"] == "completed", log
        assert says in (job_dir / "render.log").read_text() + log
        published = _result_png(devnet, job, tmp_path / "hostile.png")
        if secret:  # rendered, so the frame is public: none of the secret may be in it
            assert _share(published, tuple(secret)) == 0.0
        if _share(published, MISSING_TEXTURE_RGB) > 0.5:
            assert "image 'secret.png'" in log  # Blender's colour for the image it could not find
        else:
            describe_sample_render(published)
    else:
        assert job["status"] != "completed" and not job.get("full_result_cid"), log
        assert not (job_dir / "render" / "render0001.png").exists()
        if expected == "failed":
            failed = [ln for ln in log.splitlines() if f"✗ Job {hostile} failed" in ln]
            assert len(failed) == 1 and says in failed[0], log  # the reason, logged once
            journal = json.loads((outcome.run.data_dir / "completed_jobs.json").read_text())
            assert says in journal["failed_jobs"][hostile]  # remembered: never picked up again
        else:
            skipped = [ln for ln in log.splitlines() if f"Skipping job {hostile} without claiming it" in ln]
            assert len(skipped) == 1 and says in skipped[0], log
            assert job["status"] == "open"

    honest = _job(devnet, outcome.honest)
    assert honest["status"] == "completed", log
    png = _result_png(devnet, honest, tmp_path / "honest.png")
    describe_sample_render(png)
    if secret:
        assert _share(png, tuple(secret)) == 0.0
    described = "sandboxed with bwrap" if sandbox == "bwrap" else "not sandboxed (RENDER_SANDBOX=off)"
    assert f"Renders are {described}" in log


@pytest.mark.parametrize("kind", ["honest-packed", "honest-archive"])
def test_honest_scenes_with_packed_or_archived_textures_render(
    kind: str, run_cases, devnet: Devnet, tmp_path: Path
) -> None:
    """Textures packed into the .blend, or beside it in the archive by a relative path, are used."""
    [outcome] = run_cases((Case(kind, kind, "rendered", ""),))
    job = _job(devnet, outcome.hostile)
    assert job["status"] == "completed", outcome.run.output
    png = _result_png(devnet, job, tmp_path / "result.png")
    # The textured plane covers the lower half of the frame in the texture's colour, and only that half.
    colour, half = tuple(outcome.built["expect_rgb"]), Image.open(png).height // 2
    assert _share(png, colour, slice(half + 1, None)) > 0.9
    assert _share(png, colour, slice(0, half - 1)) == 0
