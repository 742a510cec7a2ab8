"""Rendering one job in a separate background Blender, with a deadline and a clean kill.

One launch per job both validates (a file Blender cannot open fails with Blender's own message) and
renders. The child gets a scrubbed environment (no private key, no tokens), a home and temp folder inside
the job folder, and its own process group, so a timeout or a stop kills Blender and anything it started.
The launch may happen before the job exists: a warm standby (``standby.py``) is the same child, started
the same way, that waits for its job's spec on stdin.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, RenderCancelled, RenderError, RenderTimeout, SceneRejected
from ..limits import CpuBudget, RenderLimits
from ..scene.job_settings import RenderSettings
from .child_events import child_event
from .devices import DeviceChoice
from .sandbox import Sandbox
from .standby import Standby, kill_group, reap_later

log = logging.getLogger("veriframe.worker")

CHILD_SCRIPT = Path(__file__).resolve().parents[2] / "render_child.py"
# Only these reach the child: enough for Blender and the GPU stack, never the worker's secrets.
ENV_ALLOWLIST = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",
    "WINDIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "CUDA_VISIBLE_DEVICES",
)
ENV_PREFIX_ALLOWLIST = ("MESA_", "LIBGL_", "EGL_", "__EGL_", "__GLX_", "GALLIUM_", "OCIO")
# Render progress: the fraction done, and the samples done of the total where the engine counts them.
ProgressCallback = Callable[[float, int | None, int | None], None]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Lines Blender prints on every headless render with Mesa's EGL: not the reason for anything.
NOISE = ("EGL Error (0x3009)",)


@dataclass(frozen=True)
class BlenderCommand:
    """How to start a render child: a Blender binary, or a Python that has the ``bpy`` module."""

    executable: str
    uses_bpy_module: bool

    def argv(self, blend: Path, spec: Path, gpu_backend: str | None = None) -> list[str]:
        if self.uses_bpy_module:
            # -I: no PYTHON* variables, no user site, and not the job folder on sys.path.
            return [self.executable, "-I", str(CHILD_SCRIPT), str(spec)]
        return self._binary(gpu_backend, [str(blend)], [str(spec)])

    def standby_argv(self, token: str, engine: str, gpu_backend: str | None = None) -> list[str]:
        """A render child that warms up with ``engine`` and waits for its spec (``render_child.py``)."""
        standby = ["--standby", token, engine]
        if self.uses_bpy_module:
            return [self.executable, "-I", str(CHILD_SCRIPT), *standby]
        return self._binary(gpu_backend, [], standby)

    def _binary(self, gpu_backend: str | None, blend: list[str], child_args: list[str]) -> list[str]:
        """A Blender binary in the background: factory settings, no scripts of the file, offline."""
        backend = ["--gpu-backend", gpu_backend] if gpu_backend else []  # EEVEE's GPU API, where set
        return [
            self.executable,
            *backend,
            "-b",
            "--factory-startup",
            "--disable-autoexec",
            "--offline-mode",
            "-noaudio",
            *blend,
            "--python-exit-code",
            "1",
            "--python",
            str(CHILD_SCRIPT),
            "--",
            *child_args,
        ]

    def probe_argv(self) -> list[str]:
        """A command that prints ``Blender X.Y.Z`` and a ``VERIFRAME-PROBE`` line of JSON facts (version,
        label, Python): proof that this Blender starts at all, and what it is. Opens no file."""
        if self.uses_bpy_module:
            return [self.executable, "-I", "-c", PROBE_CODE]
        return [self.executable, "-b", "--factory-startup", "--offline-mode", "--python-expr", PROBE_CODE]


# Runs in the operator's own Blender, on no file: never a stranger's code. It lists the GPUs Cycles can
# render on, type by type (Cycles lists the CPU apart, under ``devices``).
PROBE_CODE = (
    "import bpy, json, platform\n"
    "print('Blender', bpy.app.version_string)\n"
    "facts = {'version': list(bpy.app.version), 'label': 'Blender ' + bpy.app.version_string,\n"
    "         'python': platform.python_version(), 'devices': [], 'devices_error': None}\n"
    "try:\n"
    "    import addon_utils\n"
    "    addon_utils.enable('cycles', default_set=True)\n"
    "    prefs = bpy.context.preferences.addons['cycles'].preferences\n"
    "    for kind in ('OPTIX', 'CUDA', 'HIP', 'ONEAPI', 'METAL'):\n"
    "        try:\n"
    "            prefs.compute_device_type = kind\n"
    "        except TypeError:\n"
    "            continue\n"
    "        prefs.refresh_devices()\n"
    "        facts['devices'] += [{'type': d.type, 'name': d.name, 'id': d.id}\n"
    "                             for d in prefs.get_devices_for_type(kind) if d.type != 'CPU']\n"
    "except Exception as exc:\n"
    "    facts['devices_error'] = f'{type(exc).__name__}: {exc}'\n"
    "print('VERIFRAME-PROBE', json.dumps(facts), flush=True)\n"
)


def find_blender(blender_path: str | None) -> BlenderCommand:
    """``BLENDER_PATH`` when set; else this Python, when it can import ``bpy``."""
    if blender_path:
        return BlenderCommand(blender_path, uses_bpy_module=False)
    if importlib.util.find_spec("bpy") is not None:
        return BlenderCommand(sys.executable, uses_bpy_module=True)
    raise ConfigError(
        "BLENDER_PATH", "is not set and this Python has no bpy module: point it at a Blender binary"
    )


@dataclass(frozen=True)
class RenderResult:
    output: Path
    width: int
    height: int
    engine: str
    seconds: float
    samples_done: int | None
    samples_total: int | None
    # Files the scene names that do not exist where it rendered (it rendered without them, as Blender
    # does), each as "path (who names it)"; render_child.py's judge_reads says why that is safe.
    missing_files: tuple[str, ...] = ()
    blender: str = ""  # the Blender that rendered it, e.g. "4.5.15" (see inventory.py)
    threads: int | None = None  # render threads, as Blender reported them
    nice: int | None = None  # the render process's nice value (None where the OS has none)
    device: str = ""  # what rendered it, as the child saw it: "CPU", "CUDA NVIDIA ...", or EEVEE's GPU


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; raises ``RenderError`` for anything that is not a PNG."""
    with path.open("rb") as file:
        head = file.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise RenderError(f"Blender's output {path.name} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def child_environment_base() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST or k.startswith(ENV_PREFIX_ALLOWLIST)}


def child_environment(job_dir: Path, shader_cache: Path | None = None) -> dict[str, str]:
    """The render child's whole environment: allowlisted variables, a home inside the job folder.

    ``shader_cache`` outlives the job: compiling EEVEE's shaders is most of a small render's time in
    software GL (about 20 s of a 23 s job with Debian's Blender here), and the driver's own disk cache
    cuts that on every job after the first. Only the GL driver writes there, keyed by shader hashes; a
    scene cannot (it runs no code).
    """
    home = job_dir / "home"
    tmp = job_dir / "tmp"
    for folder in (home, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    env = child_environment_base()
    env.update(
        {
            "HOME": str(home),
            "USERPROFILE": str(home),
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "TMP": str(tmp),
            # Keep the operator's own Blender preferences and add-ons out of the render.
            "BLENDER_USER_RESOURCES": str(home / "blender"),
            "BLENDER_USER_CONFIG": str(home / "blender" / "config"),
            "BLENDER_USER_SCRIPTS": str(home / "blender" / "scripts"),
            "BLENDER_USER_DATAFILES": str(home / "blender" / "datafiles"),
            "BLENDER_USER_EXTENSIONS": str(home / "blender" / "extensions"),
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if shader_cache is not None:
        use_shader_cache(env, shader_cache)
    return env


def use_shader_cache(env: dict[str, str], shader_cache: Path) -> dict[str, str]:
    """Points the disk caches of the GL drivers and of Blender in ``env`` at ``shader_cache`` (a driver
    cache ``env`` names already keeps its place); returns ``env``. The bench's bare renders get the same."""
    shader_cache.mkdir(parents=True, exist_ok=True)
    env.setdefault("MESA_SHADER_CACHE_DIR", str(shader_cache / "mesa"))  # Mesa (llvmpipe, AMD, Intel)
    env.setdefault("__GL_SHADER_DISK_CACHE_PATH", str(shader_cache / "nvidia"))  # NVIDIA's driver
    env["XDG_CACHE_HOME"] = str(shader_cache)  # Blender's own (``blender/``) and fontconfig's
    return env


class BlenderRenderer:
    """Runs render children for jobs, one at a time, each inside the caps of ``limits``.

    ``sandbox`` (see ``sandbox.py``) wraps each child when given; ``sandboxed`` says which for the log.
    """

    def __init__(
        self,
        command: BlenderCommand,
        timeout: float,
        shader_cache: Path | None = None,
        *,
        limits: RenderLimits | None = None,
        sandbox: Sandbox | None = None,
        cpu: CpuBudget | None = None,
        device: DeviceChoice | None = None,
        gpu_backend: str | None = None,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.shader_cache = shader_cache
        self.limits = limits or RenderLimits()
        self.cpu = cpu or CpuBudget(nice=0)
        self.device = device or DeviceChoice()
        self.gpu_backend = gpu_backend
        self.sandbox = sandbox
        # Looked up now: nothing that may take a lock (like dlopen) should run between fork and exec.
        self._prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None

    def with_device(self, device: DeviceChoice, cpu: CpuBudget) -> BlenderRenderer:
        """The same Blender, sandbox and caps, rendering on ``device`` with ``cpu`` (a render slot's)."""
        return BlenderRenderer(
            self.command,
            self.timeout,
            self.shader_cache,
            limits=self.limits,
            sandbox=self.sandbox,
            cpu=cpu,
            device=device,
            gpu_backend=self.gpu_backend,
        )

    def start_standby(self, folder: Path, engine: str, *, idle: bool = False) -> Standby:
        """Starts a warm standby in ``folder`` (fresh, a sibling of the job folders) for the next job;
        ``idle``: at idle CPU priority (``SCHED_IDLE``, until ``Standby.promote``), beside a render."""
        folder.mkdir(parents=True)
        token = secrets.token_hex(8)
        argv = self.command.standby_argv(token, engine, self.gpu_backend)
        process = self._spawn(argv, folder, stdin=subprocess.PIPE, idle=idle)
        lines: queue.Queue[str | None] = queue.Queue()
        standby = Standby(self, process, folder, token, lines, idle=idle)
        _read_output(process, lines, standby.note_line)
        return standby

    def render(
        self,
        blend: Path,
        job_dir: Path,
        settings: RenderSettings,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        standby: Standby | None = None,
    ) -> RenderResult:
        """Renders ``blend`` (inside ``job_dir``) into ``job_dir/render``: in ``standby`` when given (it
        is this job's from now on, and gone after), else in a child started for it."""
        # The child runs with its folder as its cwd: every path it gets must be absolute.
        blend, job_dir = blend.resolve(), job_dir.resolve()
        out_dir = job_dir / "render"
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / "render0001.png"
        output.unlink(missing_ok=True)
        scene = scene_files(blend, job_dir)
        if standby is not None and not (standby.renderer is self and scene is not None):
            log.info("[Worker] The standby Blender cannot render %s: it renders in a fresh one", blend.name)
            standby.discard()
            standby = None
        # The child's folder: the job's own, or the standby's, which gets the scene hard-linked into it.
        root = standby.folder if standby is not None else job_dir
        token = standby.token if standby is not None else secrets.token_hex(8)

        def inside(path: Path) -> Path:  # a path in the job folder, as the standby sees it
            return root / path.relative_to(job_dir) if standby is not None else path

        try:
            if standby is not None and scene is not None:
                link_tree(scene, root / scene.relative_to(job_dir))
                (root / "render").mkdir(exist_ok=True)
            spec = root / "render_spec.json"
            spec.write_text(
                json.dumps(
                    {
                        "blend": str(inside(blend)),
                        "output": str(inside(output)),
                        "tmp_dir": str(root / "tmp"),
                        "settings": settings.to_json(),
                        "limits": self.limits.to_json(),
                        "cpu": self.cpu.to_json(),
                        "device": (self.device if settings.device != "CPU" else DeviceChoice()).to_json(),
                        "job_root": str(root),
                        "token": token,
                    }
                ),
                encoding="utf-8",
            )
            started = time.monotonic()
            if standby is not None:
                events, tail, returncode = self._run_standby(standby, spec, blend, job_dir, progress, cancel)
                if inside(output).is_file():
                    os.replace(inside(output), output)
            else:
                events, tail, returncode = self._run_child(blend, spec, job_dir, token, progress, cancel)
            seconds = time.monotonic() - started
        finally:
            if standby is not None:
                standby.discard(wait=False)

        rejected = [e for e in events if e.get("event") == "rejected"]
        errors = [e for e in events if e.get("event") == "error"]
        done = next((e for e in events if e.get("event") == "done"), None)
        if rejected:
            raise SceneRejected(f"the scene was rejected before rendering: {rejected[-1].get('message')}")
        if errors:
            raise RenderError(f"Blender could not render {blend.name}: {errors[-1].get('message')}")
        if done is None or not output.is_file():
            said = [line for line in tail if not line.startswith(NOISE)]
            blender_says = [line for line in said if "error" in line.lower()] or said[-3:] or ["no output"]
            message = (
                f"Blender {_how_it_ended(returncode)} without a render of {blend.name}: "
                f"{' | '.join(blender_says)[-500:]}"
            )
            raise RenderError(message + self._memory_hint(returncode, tail))
        width, height = png_size(output)
        if (width, height) != (done.get("width"), done.get("height")):
            raise RenderError(
                f"the PNG is {width}x{height}, but Blender was asked for "
                f"{done.get('width')}x{done.get('height')}"
            )
        last_progress = next((e for e in reversed(events) if e.get("event") == "progress"), {})
        rendering = next((e for e in events if e.get("event") == "rendering"), {})
        return RenderResult(
            output,
            width,
            height,
            str(done.get("engine")),
            seconds,
            last_progress.get("samples_done"),
            last_progress.get("samples_total"),
            tuple(str(path).replace(str(root), str(job_dir), 1) for path in rendering.get("missing") or ()),
            str(done.get("blender") or ""),
            done.get("threads"),
            done.get("nice"),
            str(done.get("device") or ""),
        )

    def _run_child(
        self,
        blend: Path,
        spec: Path,
        job_dir: Path,
        token: str,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[list[dict], deque[str], int | None]:
        argv = self.command.argv(blend, spec, self.gpu_backend)
        process = self._spawn(argv, job_dir, stdin=subprocess.DEVNULL)
        lines: queue.Queue[str | None] = queue.Queue()
        _read_output(process, lines)
        return self._watch(process, lines, blend, job_dir, token, progress, cancel)

    def _run_standby(
        self,
        standby: Standby,
        spec: Path,
        blend: Path,
        job_dir: Path,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[list[dict], deque[str], int | None]:
        """Hands ``spec`` to the parked child and watches it render, as ``_run_child`` does a fresh one."""
        assert standby.process.stdin is not None
        try:
            standby.process.stdin.write(f"{spec}\n")
            standby.process.stdin.close()
        except OSError:  # it died parked: what it said tells why (below)
            pass
        return self._watch(standby.process, standby.lines, blend, job_dir, standby.token, progress, cancel)

    def _spawn(self, argv: list[str], work_dir: Path, *, stdin: int, idle: bool = False) -> subprocess.Popen:
        """Starts a render child in ``work_dir``: sandboxed when set, its own process group, capped."""
        if self.sandbox is not None:
            writable = [work_dir] + ([self.shader_cache] if self.shader_cache is not None else [])
            argv = self.sandbox.wrap(argv, writable=writable, cwd=work_dir)
        log.debug("[Worker] Starting render child: %s", " ".join(argv))
        popen_extra: dict = (
            {
                "start_new_session": True,
                "preexec_fn": self._prepare_idle_child if idle else self._prepare_child,
            }
            if os.name == "posix"
            else {
                "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
                | (subprocess.BELOW_NORMAL_PRIORITY_CLASS if self.cpu.nice > 0 else 0)  # type: ignore[attr-defined]
            }
        )
        process = subprocess.Popen(
            argv,
            cwd=work_dir,
            env=child_environment(work_dir, self.shader_cache),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **popen_extra,
        )
        return process

    def _watch(
        self,
        process: subprocess.Popen,
        lines: queue.Queue[str | None],
        blend: Path,
        job_dir: Path,
        token: str,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> tuple[list[dict], deque[str], int | None]:
        """Reads a render child's output until it ends: events, the last lines, its exit code. Kills it
        on a stop or past ``timeout``; everything it printed goes to ``job_dir/render.log``."""
        with (job_dir / "render.log").open("w", encoding="utf-8", errors="replace") as blender_log:
            events: list[dict] = []
            tail: deque[str] = deque(maxlen=40)
            deadline = time.monotonic() + self.timeout
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise RenderCancelled("render stopped by the operator")
                    if time.monotonic() > deadline:
                        raise RenderTimeout(
                            f"render of {blend.name} ran past the {self.timeout:g}s limit "
                            "(RENDER_TIMEOUT) and was killed"
                        )
                    try:
                        line = lines.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if line is None:
                        break
                    blender_log.write(line)
                    event = child_event(line, token)
                    if event is not None:
                        events.append(event)
                        if event.get("event") == "done":  # its PNG is written; all else is its exit
                            break
                        if event.get("event") == "progress" and progress is not None:
                            progress(
                                float(event.get("fraction", 0.0)),
                                _whole(event.get("samples_done")),
                                _whole(event.get("samples_total")),
                            )
                    elif line.strip():
                        tail.append(line.strip())
                if not _said_done(events):
                    process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except (RenderError, subprocess.TimeoutExpired) as exc:
                kill_group(process)
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise RenderTimeout(
                        f"render of {blend.name} did not exit in time and was killed"
                    ) from None
                raise
            finally:
                if process.poll() is None and _said_done(events):
                    # Blender's exit (0.15 s here, freeing its memory and GL context) runs beside the
                    # seal and the upload; its process group is killed should it linger.
                    reap_later(process)
                elif process.poll() is None:
                    kill_group(process)
        return events, tail, process.returncode

    def _prepare_child(self) -> None:
        """Runs in the forked child before exec: caps its data memory, and ties its life to the worker.

        RLIMIT_DATA rather than RLIMIT_AS: GL drivers and Blender reserve far more address space than
        they ever touch, so an address-space cap would fail honest renders. On Linux the child also gets
        SIGKILL when the worker dies (even by SIGKILL), so no orphaned render outlives it and races the
        resumed job.
        """
        cap = self.limits.max_render_memory_mb * 1024 * 1024
        if cap > 0:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        if self._prctl is not None:
            self._prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if self.cpu.nice > 0:
            os.nice(self.cpu.nice)  # below the operator's own programs (RENDER_NICE)

    def _prepare_idle_child(self) -> None:
        """``_prepare_child``, and idle CPU priority: it runs only on CPU time nothing else wants."""
        self._prepare_child()
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    def _memory_hint(self, returncode: int | None, tail: deque[str]) -> str:
        """Why Blender may have died, when running out of memory under the cap is the likely cause."""
        cap = self.limits.max_render_memory_mb
        said = " ".join(tail).lower()
        out_of_memory = any(w in said for w in ("memory", "bad_alloc", "cannot allocate", "malloc"))
        died = returncode is not None and returncode < 0
        if cap > 0 and (out_of_memory or died):
            return f" (it may have run out of memory under the {cap} MB cap, MAX_RENDER_MEMORY_MB)"
        return ""


def _said_done(events: list[dict]) -> bool:
    return bool(events) and events[-1].get("event") == "done"


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _how_it_ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"crashed ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _read_output(
    process: subprocess.Popen, lines: queue.Queue, on_line: Callable[[str], None] | None = None
) -> None:
    """A thread that queues the child's output lines (None at the end), showing each to ``on_line``."""

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if on_line is not None:
                on_line(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True, name="render-output").start()


def scene_files(blend: Path, job_dir: Path) -> Path | None:
    """What of ``job_dir`` a standby needs to render ``blend``: the unpacked archive's folder
    (``scene/``, every file the scene may read), or the .blend itself when the asset was a plain .blend
    (``asset.blend``, beside the job's books and output, which no render may see); None for any other
    place (the render then starts a child in the job folder)."""
    scene_dir = job_dir / "scene"
    if blend.is_relative_to(scene_dir):
        return scene_dir
    if blend.parent == job_dir and blend.is_file():
        return blend
    return None


def link_tree(source: Path, dest: Path) -> None:
    """``source``'s files (or ``source`` itself, a file) hard-linked under ``dest`` (copied where links
    cannot be made, e.g. another file system): instant, and the job folder keeps its own names."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_file():
        link(str(source), str(dest))
        return
    shutil.copytree(source, dest, copy_function=link)
