"""An OS sandbox around the render child, with bubblewrap (``bwrap``) on Linux.

The render child already runs no scene Python and checks every path a scene names, but those are
Blender's rules, enforced inside Blender. The sandbox is the second wall, enforced by the kernel: the
child gets no network, sees the system (``/usr``, a few files of ``/etc``) read-only, sees the Blender
it runs read-only, and can write only to its job folder and the shader cache. The operator's home,
``/tmp`` and every other file simply do not exist inside it.

``RENDER_SANDBOX=auto`` (the default) uses bwrap when it is installed and the render Blender starts
inside it, and says loudly when it does not; ``bwrap`` refuses to render without it; ``off`` never
uses it. Windows and macOS have no such sandbox here: there the scene check in the render child is the
only wall, and every sentence this module writes for the log, the panel and the setup check says so.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger("veriframe.worker")

# Top-level system folders, bound read-only (or re-created as the symlinks they are on merged-/usr systems).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix/store")
# The parts of /etc that the dynamic loader, fonts and GL vendor libraries read; nothing else of it.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "fonts",
    "glvnd",
    "drirc",
    "vulkan",
    "OpenCL",
    "nvidia",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "ssl/certs",
)
# GPU device nodes and the sysfs that GL drivers enumerate them through.
DEVICE_GLOBS = ("/dev/dri", "/dev/nvidia*", "/dev/kfd")
SYS_DIRS = ("/sys/dev", "/sys/devices", "/sys/bus", "/sys/class")


@dataclass(frozen=True)
class Sandbox:
    """A bwrap command line that runs one program with the access described in the module docstring."""

    bwrap: str
    readable: tuple[Path, ...]

    def wrap(self, argv: list[str], *, writable: list[Path], cwd: Path) -> list[str]:
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for folder in SYSTEM_DIRS:
            path = Path(folder)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), folder]
            elif path.is_dir():
                args += ["--ro-bind", folder, folder]
        for name in ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for pattern in DEVICE_GLOBS:
            for device in sorted(glob.glob(pattern)):
                args += ["--dev-bind-try", device, device]
        for folder in SYS_DIRS:
            args += ["--ro-bind-try", folder, folder]
        for path in self.readable:
            args += ["--ro-bind-try", str(path), str(path)]
        for path in writable:
            path.mkdir(parents=True, exist_ok=True)
            args += ["--bind", str(path), str(path)]
        # The root bwrap builds is a tmpfs: make it read-only too, so only the binds above are writable.
        return [*args, "--remount-ro", "/", "--chdir", str(cwd), "--", *argv]


def runtime_paths(executable: str, uses_bpy_module: bool, child_script: Path) -> tuple[Path, ...]:
    """What the render child must read besides the system: its Blender (or Python and ``bpy``) and script."""
    paths = {child_script}
    real = Path(os.path.realpath(executable))
    if uses_bpy_module and Path(executable).absolute() == Path(sys.executable).absolute():
        paths |= {Path(sys.prefix), Path(sys.base_prefix), real.parent}
        spec = importlib.util.find_spec("bpy")
        if spec is not None and spec.origin:
            paths.add(Path(spec.origin).resolve().parent.parent)  # site-packages holding bpy
    elif uses_bpy_module:
        # Another Python (a bpy venv of another release): its own folder, which holds the site-packages
        # with bpy, and the installation of the interpreter it runs on.
        home = Path(executable).absolute().parent.parent
        paths |= {home, Path(os.path.realpath(home)), real.parent.parent}
    else:
        # A blender.org build keeps its libraries and Python next to the executable.
        paths |= {real.parent, Path(executable).absolute().parent}
    covered = [Path(p) for p in SYSTEM_DIRS]
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(p.parts)):  # a folder before anything inside it
        if not any(path.is_relative_to(c) for c in covered):
            kept.append(path)
            covered.append(path)
    return tuple(sorted(kept))


# Said wherever renders run without the sandbox: what still guards the node then, and what does not.
SCENE_CHECK_ONLY = (
    "the scene check (no scene Python, no file outside the job folder that exists here, caps) is the "
    "only wall"
)


def platform_has_sandbox() -> bool:
    """Whether this OS has the render sandbox at all (bwrap is Linux-only); elsewhere it is no fault."""
    return sys.platform.startswith("linux")


def choose_sandbox(
    mode: str, executable: str, uses_bpy_module: bool, child_script: Path, probe_argv: list[str]
) -> tuple[Sandbox | None, str]:
    """The sandbox to render in (or None) and a sentence saying which, and why, for the log and panel.

    The choice is proven, not assumed: ``probe_argv`` (Blender printing its version) must run inside the
    sandbox. Raises ``ConfigError`` when ``mode`` is ``bwrap`` and that fails.
    """
    if mode == "off":
        return None, f"not sandboxed (RENDER_SANDBOX=off): {SCENE_CHECK_ONLY}"
    reason = _unavailable_reason(probe_argv, executable, uses_bpy_module, child_script)
    if reason is None:
        readable = runtime_paths(executable, uses_bpy_module, child_script)
        sandbox = Sandbox(shutil.which("bwrap") or "bwrap", readable)
        return sandbox, "sandboxed with bwrap (no network, read-only system, writes only to the job folder)"
    if mode == "bwrap":
        raise ConfigError("RENDER_SANDBOX", f"is bwrap, but {reason}")
    return None, f"NOT sandboxed: {reason} (RENDER_SANDBOX=auto); {SCENE_CHECK_ONLY}"


def _unavailable_reason(
    probe_argv: list[str], executable: str, uses_bpy_module: bool, child_script: Path
) -> str | None:
    if not platform_has_sandbox():
        return f"{_os_name()} has no OS sandbox for renders (bwrap is Linux-only)"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed (apt install bubblewrap)"
    sandbox = Sandbox(bwrap, runtime_paths(executable, uses_bpy_module, child_script))
    try:
        done = run_probe(probe_argv, sandbox)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start Blender ({exc})"
    if done.returncode != 0 or "Blender" not in done.stdout:
        said = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        return f"Blender at {executable} does not start inside bwrap ({said[:200]})"
    return None


def run_probe(
    argv: list[str],
    sandbox: Sandbox | None,
    timeout: float = 120.0,
    environ: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs a Blender's probe (``BlenderCommand.probe_argv``), in ``sandbox`` when given, with a throwaway
    home; ``environ`` (default: only ``PATH``) is the rest of its environment."""
    with tempfile.TemporaryDirectory(prefix="veriframe-probe-") as folder:
        env = dict(environ or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, HOME=folder, TMPDIR=folder)
        run = sandbox.wrap(argv, writable=[Path(folder)], cwd=Path(folder)) if sandbox is not None else argv
        return subprocess.run(
            run, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
        )


def _os_name() -> str:
    return {"win32": "Windows", "darwin": "macOS"}.get(sys.platform, sys.platform)
