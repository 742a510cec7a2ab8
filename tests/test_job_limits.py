"""The caps every job must fit in, and the OS sandbox renders run in; no Blender needed here.

The sandbox tests run a real ``bwrap`` on this machine (``python3 build.py test`` installs bubblewrap)
and the download caps talk HTTP to real servers on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse

from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import AssetError, AssetTooLarge, ConfigError, JobSettingsError
from veriframe_addon.worker.ipfs.cid import cid_of_bytes
from veriframe_addon.worker.ipfs.client import IpfsClient
from veriframe_addon.worker.limits import MIB, RenderLimits
from veriframe_addon.worker.render.renderer import CHILD_SCRIPT
from veriframe_addon.worker.render.sandbox import Sandbox, choose_sandbox, runtime_paths
from veriframe_addon.worker.scene.job_settings import parse_render_settings
from veriframe_addon.worker.scene.unpack import describe, prepare_blend

from .servers import serve_app

KEY = "0x" + "1" * 60


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "BACKEND_API_URL": "http://127.0.0.1:9/api/v1",
        "WORKER_ADDRESS": "0x1234",
        "WORKER_PRIVATE_KEY": KEY,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
    }


# ---------------------------------------------------------------------------------------------- config


def test_caps_have_defaults_an_honest_job_never_meets(env: dict[str, str]) -> None:
    limits = load_config(environ=env).limits
    assert limits.max_output_megapixels == 36.0  # 8K UHD fits
    assert limits.max_samples == 4096
    assert limits.max_asset_mb == 2048 and limits.max_unpacked_mb == 4096
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    assert 0 < limits.max_render_memory_mb <= ram_mb  # three quarters of RAM
    assert load_config(environ=env).sandbox == "auto"


def test_caps_are_read_from_the_environment(env: dict[str, str]) -> None:
    env |= {
        "MAX_OUTPUT_MEGAPIXELS": "8.3",
        "MAX_SAMPLES": "256",
        "MAX_RENDER_MEMORY_MB": "0",
        "MAX_ASSET_MB": "10",
        "MAX_UNPACKED_MB": "20",
        "RENDER_SANDBOX": "BWRAP",
    }
    config = load_config(environ=env)
    assert config.limits == RenderLimits(8.3, 256, 0, 10, 20)
    assert config.sandbox == "bwrap"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_SAMPLES", "lots"),
        ("MAX_SAMPLES", "0"),
        ("MAX_OUTPUT_MEGAPIXELS", "-1"),
        ("MAX_ASSET_MB", "inf"),
        ("RENDER_SANDBOX", "docker"),
    ],
)
def test_a_bad_cap_names_its_variable(env: dict[str, str], variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=env | {variable: value})
    assert caught.value.variable == variable


# -------------------------------------------------------------------------------------- job settings


@pytest.mark.parametrize(
    ("settings", "frames"),
    [
        ({"frame_start": 1, "frame_end": 10_000}, 10_000),
        ({"frames": 250}, 250),
        ({"frames": [1, 2, 3]}, 3),
    ],
)
def test_a_request_for_many_frames_is_refused_before_claiming(settings: dict, frames: int) -> None:
    with pytest.raises(JobSettingsError, match=f"asks for {frames} frames"):
        parse_render_settings(json.dumps(settings))


@pytest.mark.parametrize(
    ("settings", "frame"),
    [({"frame_start": 7, "frame_end": 7}, 7), ({"frames": [12]}, 12), ({"frames": 1, "frame": 3}, 3)],
)
def test_a_one_frame_request_renders_that_frame(settings: dict, frame: int) -> None:
    assert parse_render_settings(json.dumps(settings)).frame == frame


def test_the_sample_cap_is_the_operators(env: dict[str, str]) -> None:
    assert parse_render_settings('{"samples": 512}', max_samples=512).samples == 512
    with pytest.raises(JobSettingsError, match="MAX_SAMPLES"):
        parse_render_settings('{"samples": 513}', max_samples=512)


# ------------------------------------------------------------------------------------------- assets


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "a PNG image"),
        (b"\xff\xd8\xff\xe0", "a JPEG image"),
        (b"%PDF-1.7", "a PDF document"),
        (b"\x7fELF\x02\x01", "a Linux executable"),
        (b"<!DOCTYPE html><html>", "an HTML page"),
        (b"hello, this is not a scene\n", "a text file (it starts 'hello, this is not a scene')"),
        (bytes(range(200, 256)) * 4, "unrecognised binary data (it starts with c8 c9 ca"),
        (b"", "an empty file"),
    ],
)
def test_a_file_that_is_not_a_scene_is_named_for_what_it_is(tmp_path: Path, head: bytes, said: str) -> None:
    assert said in describe(head)
    asset = tmp_path / "asset"
    asset.write_bytes(head)
    with pytest.raises(AssetError, match=r"not a \.blend file") as caught:
        prepare_blend(asset, tmp_path / "scene")
    assert said in str(caught.value)


def test_gzip_of_something_else_says_so(tmp_path: Path) -> None:
    asset = tmp_path / "asset"
    asset.write_bytes(gzip.compress(b"plain words" * 100))
    with pytest.raises(AssetError, match=r"gzip-compressed data that is neither a \.blend nor a tar"):
        prepare_blend(asset, tmp_path / "scene")


def test_an_archive_with_two_scenes_side_by_side_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "asset"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.blend", b"BLENDER-v405a")
        zf.writestr("b.blend", b"BLENDER-v405b")
        zf.writestr("libs/lib.blend", b"BLENDER-v405lib")
    with pytest.raises(AssetError, match=r"holds 2 scenes side by side \(a.blend, b.blend\)"):
        prepare_blend(archive, tmp_path / "scene")


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "asset"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("scene.blend", b"BLENDER-v405")
        with zf.open("padding.bin", "w") as out:
            for _ in range(80):
                out.write(bytes(MIB))
    with pytest.raises(AssetError, match=r"would expand \d+x.*a zip bomb"):
        prepare_blend(archive, tmp_path / "scene")
    assert not (tmp_path / "scene").exists() or list((tmp_path / "scene").rglob("*")) == []


def test_the_unpacked_size_cap_is_enforced(tmp_path: Path) -> None:
    archive = tmp_path / "asset"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("scene.blend", b"BLENDER-v405" + os.urandom(2 * MIB))
    with pytest.raises(AssetError, match=r"unpacks to 2\.0 MB; the limit is 1\.0 MB \(MAX_UNPACKED_MB\)"):
        prepare_blend(archive, tmp_path / "scene", max_unpacked_bytes=MIB)
    assert prepare_blend(archive, tmp_path / "ok", max_unpacked_bytes=3 * MIB).is_file()


# ----------------------------------------------------------------------------------------- downloads


@pytest.fixture
def big_gateway() -> Iterator[tuple[str, str]]:
    """A gateway serving one 3 MiB file, with its length at /ipfs/ and without it (chunked) at /chunked/."""
    data = os.urandom(3 * MIB)
    cid = str(cid_of_bytes(data))
    app = FastAPI()

    @app.get("/ipfs/{_cid}")
    def whole(_cid: str) -> Response:
        return Response(data, media_type="application/octet-stream")

    @app.get("/chunked/ipfs/{_cid}")
    def chunked(_cid: str) -> StreamingResponse:
        return StreamingResponse(iter([data[i : i + MIB // 4] for i in range(0, len(data), MIB // 4)]))

    with serve_app(app) as url:
        yield url, cid


@pytest.mark.parametrize(("prefix", "verb"), [("", "announced"), ("/chunked", "sent")])
def test_a_download_over_the_cap_stops(
    big_gateway: tuple[str, str], tmp_path: Path, prefix: str, verb: str
) -> None:
    """Refused from the announced length when there is one, else as soon as the stream passes the cap."""
    url, cid = big_gateway
    client = IpfsClient("http://127.0.0.1:9", f"{url}{prefix}/ipfs", max_bytes=2 * MIB)
    with pytest.raises(AssetTooLarge, match=f"larger than 2 MB \\(gateway {verb} .*MAX_ASSET_MB"):
        client.download(cid, tmp_path / "asset")
    assert not (tmp_path / "asset").exists() and not (tmp_path / "asset.part").exists()
    # Under a cap it fits, the same file downloads and verifies.
    roomy = IpfsClient("http://127.0.0.1:9", f"{url}{prefix}/ipfs", max_bytes=4 * MIB)
    assert roomy.download(cid, tmp_path / "asset").size == 3 * MIB


# ------------------------------------------------------------------------------------------- sandbox

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None or not sys.platform.startswith("linux"),
    reason="bwrap is not installed here (python3 build.py test installs bubblewrap on Debian)",
)


def _in_sandbox(tmp_path: Path, code: str) -> dict:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    sandbox = Sandbox(shutil.which("bwrap") or "bwrap", runtime_paths(sys.executable, True, CHILD_SCRIPT))
    argv = sandbox.wrap([sys.executable, "-I", "-c", code], writable=[job], cwd=job)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_bwrap
def test_the_sandbox_hides_the_disk_blocks_the_network_and_allows_only_the_job_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the operator's file")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"""
import json, os, socket
out = {{"cwd": os.getcwd()}}
out["secret_visible"] = os.path.exists({str(secret)!r})
out["etc_shadow_visible"] = os.path.exists("/etc/shadow")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2); out["network"] = "connected"
except OSError as exc:
    out["network"] = type(exc).__name__
escaped = {str(tmp_path / "escaped.txt")!r}
for name, path in (("job_write", "written.txt"), ("usr_write", "/usr/vf-test"), ("out_write", escaped)):
    try:
        open(path, "w").write("x"); out[name] = True
    except OSError:
        out[name] = False
print(json.dumps(out))
"""
    try:
        seen = _in_sandbox(tmp_path, code)
    finally:
        listener.close()
    assert seen["cwd"] == str(tmp_path / "job")
    assert seen["secret_visible"] is False
    assert seen["network"] != "connected"
    assert seen["job_write"] is True and (tmp_path / "job" / "written.txt").read_text() == "x"
    assert seen["etc_shadow_visible"] is False  # /etc is shown only in the few parts GL needs
    # Everything but the job folder is read-only, and nothing reaches the real disk.
    assert seen["usr_write"] is False and seen["out_write"] is False
    assert not Path("/usr/vf-test").exists() and not (tmp_path / "escaped.txt").exists()


def _failing_blender(tmp_path: Path) -> str:
    fake = tmp_path / "bin" / "blender"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot start here' >&2\nexit 3\n")
    fake.chmod(0o755)
    return str(fake)


def test_sandbox_off_is_said_plainly(tmp_path: Path) -> None:
    assert choose_sandbox("off", _failing_blender(tmp_path), False, CHILD_SCRIPT, ["true"]) == (
        None,
        "not sandboxed (RENDER_SANDBOX=off): the scene check (no scene Python, no file outside the job "
        "folder that exists here, caps) is the only wall",
    )


@pytest.mark.parametrize(("platform", "name"), [("win32", "Windows"), ("darwin", "macOS")])
def test_windows_and_macos_say_the_scene_check_is_the_only_wall(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, name: str
) -> None:
    """Those platforms have no bwrap; this machine is Linux, so only ``sys.platform`` is stood in for.

    auto renders unsandboxed and says what still guards the node; the setup check passes (nothing to
    install) with that sentence; RENDER_SANDBOX=bwrap refuses to start.
    """
    from veriframe_addon.worker.ops import setup_check

    monkeypatch.setattr(sys, "platform", platform)
    blender = _failing_blender(tmp_path)
    sandbox, said = choose_sandbox("auto", blender, False, CHILD_SCRIPT, [blender, "--version"])
    assert sandbox is None
    assert said == (
        f"NOT sandboxed: {name} has no OS sandbox for renders (bwrap is Linux-only) (RENDER_SANDBOX=auto); "
        "the scene check (no scene Python, no file outside the job folder that exists here, caps) is the "
        "only wall"
    )
    with pytest.raises(ConfigError, match=f"is bwrap, but {name} has no OS sandbox"):
        choose_sandbox("bwrap", blender, False, CHILD_SCRIPT, [blender, "--version"])
    config = load_config(environ=env | {"BLENDER_PATH": sys.executable})  # this Python's bpy: it starts
    assert setup_check._Blenders(config).sandbox(config) == said


@needs_bwrap
def test_a_blender_that_cannot_run_sandboxed_is_named(tmp_path: Path) -> None:
    """auto warns and renders unsandboxed; bwrap (required) refuses to start, naming the reason."""
    blender = _failing_blender(tmp_path)
    probe = [blender, "--version"]
    sandbox, said = choose_sandbox("auto", blender, False, CHILD_SCRIPT, probe)
    assert sandbox is None
    assert said.startswith(f"NOT sandboxed: Blender at {blender} does not start inside bwrap")
    assert "cannot start here" in said
    with pytest.raises(ConfigError, match=r"is bwrap, but Blender at .* does not start inside bwrap"):
        choose_sandbox("bwrap", blender, False, CHILD_SCRIPT, probe)


@needs_bwrap
def test_the_bpy_module_starts_inside_the_sandbox() -> None:
    probe = [sys.executable, "-I", "-c", "import bpy; print('Blender', bpy.app.version_string)"]
    sandbox, said = choose_sandbox("bwrap", sys.executable, True, CHILD_SCRIPT, probe)
    assert sandbox is not None and said.startswith("sandboxed with bwrap")
