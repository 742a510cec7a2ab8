"""A real Blender executable, not the ``bpy`` module: it starts, renders the sample scene, and the worker
drives it (``render_child.py`` under ``blender --python``).

The binary comes from the ``blender_binary`` fixture: on a bare Debian machine that is Debian's Blender
4.3 in a rootfs under ``.cache`` (see ``buildtools/blender_binary.py``), which sees this machine's files
only in /tmp, the repository and its current folder. So each test copies the scene into its own
``tmp_path`` and runs Blender there.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from buildtools.blender_binary import ProvisionError, host_debian_mirror
from devnet.image_check import describe_sample_render
from veriframe_addon.render_child import engine_id
from veriframe_addon.worker.render.renderer import BlenderCommand, BlenderRenderer, png_size
from veriframe_addon.worker.scene.job_settings import RenderSettings

from .conftest import SCENE_SIZE

VERSION_LINE = re.compile(r"^Blender (\d+)\.(\d+)\.(\d+)", re.MULTILINE)


def _version(blender: Path) -> tuple[int, int, int]:
    done = subprocess.run(
        [str(blender), "--version"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    match = VERSION_LINE.search(done.stdout)
    assert match, f"no version in: {done.stdout[:300]}"
    major, minor, patch = (int(v) for v in match.groups())
    return major, minor, patch


def test_blender_binary_is_at_least_4_2(blender_binary: Path) -> None:
    assert _version(blender_binary) >= (4, 2, 0)


def test_blender_binary_renders_the_sample_scene_headless_with_eevee(
    blender_binary: Path, sample_blend: Path, tmp_path: Path
) -> None:
    """The scene the ``bpy`` module (4.5) wrote opens in the binary (4.3 reads it with a warning)."""
    scene = tmp_path / "scene.blend"
    shutil.copyfile(sample_blend, scene)
    engine = engine_id("EEVEE", _version(blender_binary))
    started = time.monotonic()
    done = subprocess.run(
        [
            str(blender_binary),
            "-b",
            "--factory-startup",
            "--disable-autoexec",
            "-noaudio",
            str(scene),
            "-E",
            engine,
            "-o",
            str(tmp_path / "frame_"),
            "-f",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    frame = tmp_path / "frame_0001.png"
    assert done.returncode == 0 and frame.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    assert png_size(frame) == SCENE_SIZE
    print(f"{engine} render by {blender_binary} in {seconds:.1f} s: {describe_sample_render(frame)}")


def test_worker_renders_through_a_blender_binary(
    blender_binary: Path, sample_blend: Path, tmp_path: Path
) -> None:
    """``BlenderCommand(uses_bpy_module=False)``: the argv and child script real installs use."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    blend = job_dir / "scene.blend"
    shutil.copyfile(sample_blend, blend)
    renderer = BlenderRenderer(BlenderCommand(str(blender_binary), uses_bpy_module=False), timeout=240)
    result = renderer.render(blend, job_dir, RenderSettings(samples=1))
    assert (result.width, result.height) == SCENE_SIZE
    assert result.engine.startswith("BLENDER_EEVEE")
    assert result.samples_done == result.samples_total == 1
    print(f"worker render in {result.seconds:.1f} s: {describe_sample_render(result.output)}")


@pytest.fixture
def rootfs_run(blender_binary: Path) -> Path:
    runner = blender_binary.parent / "rootfs-run"
    if not runner.is_file():
        pytest.skip(f"{blender_binary} is not the provisioned rootfs wrapper")
    return runner


def test_rootfs_run_passes_output_exit_status_and_folders_through(rootfs_run: Path, tmp_path: Path) -> None:
    script = 'pwd; echo "$VF_PROBE"; echo to-stderr >&2; cat /etc/debian_version; exit 42'
    done = subprocess.run(
        [str(rootfs_run), "sh", "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "VF_PROBE": "kept"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 42
    lines = done.stdout.splitlines()
    assert lines[:2] == [str(tmp_path), "kept"]
    assert lines[2].startswith("13"), f"not Debian 13 inside: {lines[2]}"
    assert done.stderr == "to-stderr\n"


def test_rootfs_run_keeps_the_pid_so_signals_reach_the_program(rootfs_run: Path, tmp_path: Path) -> None:
    """Every step execs the next: the worker's kill reaches Blender itself, not a wrapper around it."""
    process = subprocess.Popen(
        [str(rootfs_run), "sh", "-c", 'trap "exit 7" TERM; echo "$$"; while :; do sleep 0.1; done'],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert int(process.stdout.readline()) == process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 7


def test_host_debian_mirror_reads_the_hosts_own_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VERIFRAME_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    (tmp_path / "sources.list.d" / "other.sources.disabled").write_text(
        "Types: deb\nURIs: http://wrong.example/\nSuites: bookworm\n"
    )
    assert host_debian_mirror(tmp_path, codename="bookworm") == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://first.example/debian bookworm main\n"
    )
    assert host_debian_mirror(tmp_path, codename="bookworm") == "http://first.example/debian"
    with pytest.raises(ProvisionError, match=r"no Debian package source for 'trixie' in .*sources\.list"):
        host_debian_mirror(tmp_path, codename="trixie")  # no built-in fallback host
    monkeypatch.setenv("VERIFRAME_DEBIAN_MIRROR", "http://override.example/debian/")
    assert host_debian_mirror(tmp_path, codename="bookworm") == "http://override.example/debian"
