"""The VeriFrame sidebar as a user sees it: the real Blender GUI under Xvfb, captured in three states.

Blender's own ``bpy.ops.screen.screenshot`` gives a black image under Xvfb with Mesa, so the screen is
read from the X server instead (``xwd -root | convert``), which shows exactly what a user would see.
The binary, Xvfb, xwd and ImageMagick come from the rootfs next to a provisioned Blender
(``rootfs-run``), or from this machine's PATH for a Blender installed there.

``gui_driver.py`` runs inside Blender and says when the panel drew each state; this side owns the
devnet and the screen capture, and submits the job that leads to the next state:

- offline: *Allow Online Access* is off; Start was refused and the panel says why (no request made);
- idle: the worker runs, signed in, polling an empty network;
- rendering: a 320x180 scene at 64 EEVEE samples (about 30 s in software GL, shaders included);
- error: a job whose asset is a PNG, which the worker fails and the panel explains.

The captures are kept in ``.cache/screenshots/`` for a human to look at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from devnet.process import ROOT, Devnet

from .conftest import oldest_bpy_python, worker_env
from .processes import render_children
from .test_blender_extension import _isolated, _linux_zip

log = logging.getLogger("tests.gui")

SCREEN = (1600, 900)
SHOTS = ("offline", "idle", "rendering", "error")
SCENE = ("320x180", "64")  # size, samples: long enough to capture, short enough for a 2-core machine
DRIVER = ROOT / "tests" / "gui_driver.py"
SCREENSHOT_DIR = ROOT / ".cache" / "screenshots"
SCENARIO_TIMEOUT = 240.0  # Blender's start, a cold EEVEE render and the failure, on 2 cores in software GL
X_TOOLS = ("Xvfb", "xdpyinfo", "xwd", "convert")


def _x_runner(blender: Path) -> list[str]:
    """Prefix that runs the X tools: the rootfs's ``rootfs-run`` beside its Blender, else nothing."""
    runner = blender.parent / "rootfs-run"
    if runner.is_file() and os.access(runner, os.X_OK):
        probe = " && ".join(f"command -v {tool} >/dev/null" for tool in X_TOOLS)
        done = subprocess.run([str(runner), "sh", "-c", probe], capture_output=True, timeout=60)
        if done.returncode != 0:
            pytest.skip(f"the Blender rootfs lacks one of {', '.join(X_TOOLS)} (xvfb, x11-apps, imagemagick)")
        return [str(runner)]
    missing = [tool for tool in X_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no {', '.join(missing)} on PATH: the GUI test needs xvfb, x11-apps and imagemagick")
    return []


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :199")


def _stop(process: subprocess.Popen, name: str) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing it", name)
            process.kill()
            process.wait(timeout=20)


@contextmanager
def _xvfb(runner: list[str], log_file: Path) -> Iterator[str]:
    """A virtual 1600x900 screen; yields its DISPLAY once the server answers."""
    for _attempt in range(3):  # another server may take the number between the check and the start
        display = f":{_free_display()}"
        with log_file.open("a") as out:
            server = subprocess.Popen(
                [*runner, "Xvfb", display, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while server.poll() is None and time.monotonic() < deadline:
                ready = subprocess.run(
                    [*runner, "xdpyinfo", "-display", display], capture_output=True, timeout=30
                )
                if ready.returncode == 0:
                    yield display
                    return
                time.sleep(0.3)
        finally:
            _stop(server, "Xvfb")
    raise RuntimeError(f"Xvfb did not start: {log_file.read_text()[-2000:]}")


def _capture(runner: list[str], display: str, out: Path) -> None:
    command = f"xwd -root -display {display} | convert xwd:- PNG:{out}"
    done = subprocess.run([*runner, "sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and out.is_file(), done.stderr


def _wait_for(path: Path, blender: subprocess.Popen, blender_log: Path, deadline: float) -> dict:
    while not path.exists():
        report = path.parent / "report.json"
        if blender.poll() is not None or report.exists() or time.monotonic() > deadline:
            detail = report.read_text() if report.exists() else "no report"
            raise AssertionError(
                f"no {path.name} (Blender exit {blender.poll()}): {detail}\n"
                f"{blender_log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.2)
    return json.loads(path.read_text())


def _install_extension(blender: Path, tmp_path: Path) -> dict[str, str]:
    """The built zip installed and enabled in a throwaway user folder, as a user does in Preferences.

    ``--factory-startup`` would leave the extension disabled, so isolation comes from this folder.
    """
    env = _isolated(tmp_path)
    command = ["extension", "install-file", "-r", "user_default", "-e", str(_linux_zip())]
    done = subprocess.run(
        [str(blender), "-c", *command], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def _kill_render_children(data_dir: Path) -> None:
    """A Blender killed mid-job leaves its ``blender -b`` render child; this test's children only."""
    for pid in render_children(data_dir):
        log.warning("killing leftover render child %s", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _assert_not_blank(path: Path) -> None:
    image = Image.open(path).convert("RGB")
    assert image.size == SCREEN, f"{path.name} is {image.size}"
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500, f"{path.name}: only {len(colours or [])} colours"
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, f"{path.name}: grey-level standard deviation {spread:.1f}, looks blank"


def _panel_box(region: list[int]) -> tuple[int, int, int, int]:
    """Blender's region (x, y from the window's bottom left) as a Pillow box on the screen capture."""
    x, y, width, height = region
    top = SCREEN[1] - (y + height)
    return x, max(top, 0), x + width, min(top + height, SCREEN[1])


def _mean_difference(a: Path, b: Path, box: tuple[int, int, int, int]) -> float:
    first = Image.open(a).convert("L").crop(box)
    second = Image.open(b).convert("L").crop(box)
    return ImageStat.Stat(ImageChops.difference(first, second)).mean[0]


def test_sidebar_panel_idle_rendering_and_error(blender_binary: Path, devnet: Devnet, tmp_path: Path) -> None:
    runner = _x_runner(blender_binary)
    scene = tmp_path / "scene.blend"
    subprocess.run(
        # Saved by the oldest test Blender: the GUI's Debian 4.3 refuses files newer than itself.
        [
            oldest_bpy_python(),
            "-m",
            "devnet.sample_scene",
            str(scene),
            "--size",
            SCENE[0],
            "--samples",
            SCENE[1],
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    picture = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), "white").save(picture)

    env = _install_extension(blender_binary, tmp_path)
    # The worker's settings come from the environment (key source ENV, the preferences' default).
    data_dir = tmp_path / "worker"
    gui_env = worker_env(devnet, data_dir, POLL_INTERVAL="1")
    gui_env["BLENDER_USER_RESOURCES"] = env["BLENDER_USER_RESOURCES"]
    gui_env["TMPDIR"] = str(tmp_path / "tmp")  # Blender saves quit.blend there, not in the shared /tmp
    (tmp_path / "tmp").mkdir()

    coord = tmp_path / "gui"
    coord.mkdir()
    blender_log = tmp_path / "blender-gui.log"
    shots: dict[str, Path] = {}
    drawn: dict[str, dict] = {}
    jobs: dict[str, str] = {}
    offline_last_seen: object = "not captured"
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    window = ["-p", "0", "0", str(SCREEN[0]), str(SCREEN[1])]  # the whole screen; there is no WM
    with _xvfb(runner, tmp_path / "xvfb.log") as display, blender_log.open("w") as out:
        blender = subprocess.Popen(
            [str(blender_binary), *window, "-noaudio", "--python", str(DRIVER), "--", str(coord)],
            env={**gui_env, "DISPLAY": display},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            for name in SHOTS:
                drawn[name] = _wait_for(coord / f"state-{name}.ready", blender, blender_log, deadline)
                shots[name] = tmp_path / f"shot-{name}.png"
                _capture(runner, display, shots[name])
                log.info("captured %s after %.0fs: %s", name, time.monotonic() - started, drawn[name])
                if name == "offline":
                    # Start was refused with online access off: the worker never reached the backend.
                    record = requests.get(
                        f"{devnet.backend_url}/workers/{gui_env['WORKER_ADDRESS']}", timeout=10
                    ).json()
                    offline_last_seen = record["last_seen"]
                if name == "idle":
                    jobs["render"] = devnet.cli("submit", str(scene), "--settings", '{"samples": 64}').strip()
                elif name == "rendering":
                    jobs["bad"] = devnet.cli("submit", str(picture)).strip()
                (coord / f"state-{name}.shot").write_text(str(shots[name]))
            report = _wait_for(coord / "report.json", blender, blender_log, deadline)
            blender.wait(timeout=60)
        finally:
            (coord / "abort").touch()
            _stop(blender, "Blender")
            _kill_render_children(data_dir)
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            for path in shots.values():
                if path.exists():
                    shutil.copy(path, SCREENSHOT_DIR / path.name)
    log.info("GUI scenario took %.0fs; screenshots in %s", time.monotonic() - started, SCREENSHOT_DIR)

    assert report["error"] is None, report["error"]
    assert report["tab"]["category"] == "VeriFrame"
    refused = report["offline_start"]
    assert refused == ["CANCELLED"] or "Allow Online Access is off" in refused[0], refused
    assert report["worker_after_offline_start"] is False and offline_last_seen is None
    assert drawn["offline"]["offline"] and not drawn["offline"]["running"]
    for name in SHOTS:
        assert drawn[name]["category"] == "VeriFrame", drawn[name]
        _assert_not_blank(shots[name])
    assert drawn["idle"]["state"] in {"idle", "polling"} and drawn["idle"]["job_id"] is None
    assert drawn["rendering"]["state"] == "rendering" and drawn["rendering"]["job_id"] == jobs["render"]
    # A file was loaded after the rendering capture; the error capture proves the panel kept updating.
    assert report["reloaded"] == {"monitor_before": True, "worker_running": True}
    print(f"monitor still running right after the reload: {report['monitor_right_after_reload']}")
    assert jobs["bad"] in drawn["error"]["last_error"] and "not a .blend file" in drawn["error"]["last_error"]
    assert drawn["error"]["completed"] == 1 and drawn["error"]["failed"] == 1

    # The states really changed where the panel is: its region differs between every pair of captures.
    box = _panel_box(drawn["idle"]["region"])
    assert box[2] - box[0] > 150 and box[3] - box[1] > 300, f"sidebar region too small: {box}"
    pairs = (("offline", "idle"), ("idle", "rendering"), ("rendering", "error"), ("idle", "error"))
    for first, second in pairs:
        difference = _mean_difference(shots[first], shots[second], box)
        assert difference > 0.5, f"the panel looks the same {first} and {second} ({difference:.2f})"
