"""A real Blender executable (4.2 or newer) for the tests: found on this machine, or provisioned.

The worker's default test Blender is the ``bpy`` module, which cannot show that the worker also drives a
real ``blender`` binary (its argv, the ``--python`` render child, exit codes). Where no binary is installed
and we are root on Debian, Debian 13's ``blender`` package goes into a ``debootstrap`` rootfs under the
repo's ignored cache folder, because that needs no download from outside the ordinary Debian mirrors. A
generated wrapper starts it with the working folders shared at the same paths, so the tests hand it host
paths as if it were installed here. The rootfs also gets Xvfb, xwd and ImageMagick for GUI screenshots.

Stdlib only: ``build.py`` imports this before the virtual environment exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("build.blender")

ROOT = Path(__file__).resolve().parent.parent
MIN_VERSION = (4, 2)
# Debian 13 ships Blender 4.3; its Mesa gives EEVEE a software EGL context where there is no GPU.
SUITE = "trixie"
ROOTFS_PACKAGES = (
    "blender",
    # blender.org builds bundle requests (the extension relies on that); Debian's Blender uses the
    # system Python, which gets it from this package.
    "python3-requests",
    # EGL/GL through Mesa (llvmpipe without a GPU): headless EEVEE, and the GUI under Xvfb.
    "libegl1",
    "libegl-mesa0",
    "libgl1-mesa-dri",
    "libglx-mesa0",
    # A virtual X display, a way to wait for it (xdpyinfo), grab it (xwd) and convert the grab.
    "xvfb",
    "xauth",
    "x11-utils",
    "x11-apps",
    "imagemagick",
)
STAMP_NAME = ".veriframe-provisioned"
VERSION_LINE = re.compile(r"^Blender (\d+)\.(\d+)(?:\.(\d+))?", re.MULTILINE)
# Used for every command run inside the rootfs while provisioning: the host's PATH may start with a
# virtual environment whose python3 means nothing there.
ROOTFS_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class ProvisionError(RuntimeError):
    """The rootfs Blender could not be set up; the message says which step failed and where its log is."""


def blender_version(executable: Path | str, timeout: float = 120.0) -> tuple[int, int, int] | None:
    """The version ``executable --version`` reports, or ``None`` when it does not start or say one."""
    try:
        done = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("%s does not run: %s", executable, exc)
        return None
    match = VERSION_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        log.info(
            "%s --version said no version (exit %s): %s", executable, done.returncode, done.stderr[-300:]
        )
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def find_blender(min_version: tuple[int, int] = MIN_VERSION) -> Path | None:
    """``BLENDER_PATH``, then ``blender`` on ``PATH``: the first that runs and is at least ``min_version``."""
    candidates: list[tuple[str, str | None]] = [
        ("BLENDER_PATH", os.environ.get("BLENDER_PATH") or None),
        ("PATH", shutil.which("blender")),
    ]
    for source, candidate in candidates:
        if candidate is None:
            continue
        version = blender_version(candidate)
        if version is None:
            continue
        if version[:2] < min_version:
            log.info("%s Blender %s is %d.%d.%d, older than %d.%d", source, candidate, *version, *min_version)
            continue
        log.info("Blender %d.%d.%d from %s: %s", *version, source, candidate)
        return Path(candidate)
    return None


def provisioned_blender(cache_dir: Path) -> Path | None:
    """The wrapper of an earlier, completed provisioning under ``cache_dir``, without running anything.

    ``None`` unless we are root, the only user the wrapper's mount namespace and chroot work for.
    """
    wrapper = cache_dir / "bin" / "blender"
    if (
        os.name == "posix"
        and os.geteuid() == 0
        and wrapper.is_file()
        and _stamp_is_current(cache_dir / "blender-rootfs")
    ):
        return wrapper
    return None


def provision_unavailable_reason() -> str | None:
    """Why this machine cannot provision the rootfs Blender, or ``None`` when it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "not running as root (debootstrap, mount namespaces and chroot need it)"
    os_release = _os_release()
    if os_release.get("ID") != "debian":
        return f"this is not Debian (ID={os_release.get('ID', 'unknown')})"
    missing = [
        tool for tool in ("apt-get", "dpkg-query", "unshare", "chroot", "mount") if not shutil.which(tool)
    ]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


def host_debian_mirror(apt_dir: Path = Path("/etc/apt"), codename: str | None = None) -> str:
    """The Debian archive this host installs from, so the rootfs comes from the same (reachable) mirror.

    ``VERIFRAME_DEBIAN_MIRROR`` wins; then the first ``deb`` source for the host's own release (not its
    security archive) in ``sources.list`` or ``sources.list.d/*.sources|*.list``. No host name is built
    in: a host without a Debian source raises ``ProvisionError`` naming the files to fix.
    """
    override = os.environ.get("VERIFRAME_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    if codename is None:
        codename = _os_release().get("VERSION_CODENAME", "")
    for uri, suites in _apt_sources(apt_dir):
        if "security" in uri or "security" in " ".join(suites):
            continue
        if codename in suites or not codename:
            return uri.rstrip("/")
    raise ProvisionError(
        f"no Debian package source for {codename or 'this release'!r} in {apt_dir / 'sources.list'} or "
        f"{apt_dir / 'sources.list.d'}/*.sources|*.list: add the Debian mirror this machine installs from "
        "there, or name one in VERIFRAME_DEBIAN_MIRROR"
    )


def provision_rootfs_blender(cache_dir: Path, repo: Path = ROOT) -> Path:
    """Makes ``cache_dir/blender-rootfs`` (Debian trixie with Blender) and returns ``cache_dir/bin/blender``.

    Idempotent: a stamp written last marks a finished rootfs, so a re-run only rewrites the wrappers.
    Anything without the stamp is a half-finished attempt and is removed first. Raises
    ``ProvisionError``.
    """
    cache_dir = cache_dir.resolve()
    repo = repo.resolve()
    rootfs = cache_dir / "blender-rootfs"
    bin_dir = cache_dir / "bin"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir / "blender-rootfs.lock"):
        runner = _write_wrappers(bin_dir, rootfs, repo)
        wrapper = bin_dir / "blender"
        if _stamp_is_current(rootfs):
            log.info("rootfs Blender already provisioned: %s", wrapper)
            return wrapper

        started = time.monotonic()
        build_log = cache_dir / "blender-rootfs.log"
        build_log.write_text("", encoding="utf-8")
        _ensure_host_packages({"debootstrap": "debootstrap"}, build_log)
        _remove_rootfs(rootfs)
        mirror = host_debian_mirror()
        log.info("debootstrap %s from %s into %s (log: %s)", SUITE, mirror, rootfs, build_log)
        step = time.monotonic()
        _run_logged(["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror], build_log)
        log.info("debootstrap took %.0f s", time.monotonic() - step)

        _prepare_rootfs(rootfs)
        log.info("installing %s in the rootfs", " ".join(ROOTFS_PACKAGES))
        step = time.monotonic()
        _run_logged([str(runner), "apt-get", "update", "-q"], build_log, env=ROOTFS_ENV)
        _run_logged(
            [str(runner), "apt-get", "install", "-y", "-q", "--no-install-recommends", *ROOTFS_PACKAGES],
            build_log,
            env=ROOTFS_ENV,
        )
        _run_logged([str(runner), "apt-get", "clean"], build_log, env=ROOTFS_ENV)
        log.info("apt-get install took %.0f s", time.monotonic() - step)

        version = blender_version(wrapper)
        if version is None or version[:2] < MIN_VERSION:
            raise ProvisionError(f"the rootfs Blender does not report a version >= 4.2 (got {version})")
        (rootfs / STAMP_NAME).write_text(_stamp_text(), encoding="utf-8")
        log.info(
            "Blender %d.%d.%d provisioned in %.0f s; rootfs %s MiB: %s",
            *version,
            time.monotonic() - started,
            _size_mib(rootfs),
            wrapper,
        )
        return wrapper


def ensure_blender(repo: Path) -> Path | None:
    """A Blender binary for the tests: found, else provisioned (root on Debian), else ``None``, logged."""
    found = find_blender()
    if found is not None:
        return found
    reason = provision_unavailable_reason()
    if reason is not None:
        log.warning(
            "no Blender >= 4.2 on BLENDER_PATH or PATH, and none can be provisioned here (%s): "
            "tests that need a Blender binary will be skipped",
            reason,
        )
        return None
    try:
        return provision_rootfs_blender(repo / ".cache", repo)
    except (ProvisionError, OSError, subprocess.SubprocessError) as exc:
        log.error("could not provision a Blender binary (tests that need one will be skipped): %s", exc)
        return None


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _apt_sources(apt_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """``(uri, suites)`` of every enabled ``deb`` source, in apt's file order."""
    list_files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in list_files:
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8").splitlines():
                words = line.split("#", 1)[0].split()
                if words[:1] != ["deb"]:
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                    while words and not words[0].endswith("]"):
                        words.pop(0)
                    words = words[1:]
                if len(words) >= 2:
                    yield words[0], [words[1]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8")
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Two test runs provisioning at once would debootstrap into the same folder."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp_text() -> str:
    return json.dumps({"suite": SUITE, "packages": sorted(ROOTFS_PACKAGES)}, sort_keys=True) + "\n"


def _stamp_is_current(rootfs: Path) -> bool:
    try:
        return (rootfs / STAMP_NAME).read_text(encoding="utf-8") == _stamp_text()
    except OSError:
        return False


def _run_logged(cmd: list[str], build_log: Path, env: dict[str, str] | None = None) -> None:
    """Runs ``cmd`` with its output appended to ``build_log``; raises ``ProvisionError`` with its tail."""
    log.debug("$ %s", shlex.join(cmd))
    with build_log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        code = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        ).returncode
    if code != 0:
        tail = build_log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise ProvisionError(
            f"`{shlex.join(cmd[:4])} ...` failed (exit {code}); last lines of {build_log}:\n"
            + "\n".join(tail)
        )


def _ensure_host_packages(tools: dict[str, str], build_log: Path) -> None:
    """Installs the Debian packages (values) of host tools (keys) that are not on ``PATH``."""
    missing = sorted({package for tool, package in tools.items() if not shutil.which(tool)})
    if not missing:
        return
    log.info("installing %s on this machine", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run_logged(["apt-get", "update", "-q"], build_log, env=env)
    _run_logged(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], build_log, env=env)


def _mount_points_under(folder: Path) -> list[Path]:
    """Mount points at or below ``folder``, deepest first, from ``/proc/self/mountinfo``."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if len(fields) > 4:
                point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
                if point == folder or folder in point.parents:
                    found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _remove_rootfs(rootfs: Path) -> None:
    """Deletes a half-finished rootfs, never crossing into a leftover mount (it could be the host's /dev)."""
    if not rootfs.exists():
        return
    log.info("removing the unfinished rootfs at %s", rootfs)
    for point in _mount_points_under(rootfs):
        subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
    left = _mount_points_under(rootfs)
    if left:
        raise ProvisionError(f"cannot remove {rootfs}: still mounted at {', '.join(map(str, left))}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=False, capture_output=True)
    if rootfs.exists():
        raise ProvisionError(f"could not remove the unfinished rootfs at {rootfs}")


def _prepare_rootfs(rootfs: Path) -> None:
    """What a chroot lacks: the host's DNS for apt, no daemons started by package scripts, and the
    ``/etc/mtab`` minbase leaves out (Blender complains that it cannot list mounted file systems)."""
    mtab = rootfs / "etc" / "mtab"
    if not mtab.is_symlink() and not mtab.exists():
        mtab.symlink_to("../proc/self/mounts")
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        shutil.copyfile("/etc/resolv.conf", resolv)
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text(
        "#!/bin/sh\n# Written by buildtools/blender_binary.py: no daemons in this rootfs.\nexit 101\n"
    )
    policy.chmod(0o755)


def _write_wrappers(bin_dir: Path, rootfs: Path, repo: Path) -> Path:
    """Writes ``bin/rootfs-run`` (any rootfs program) and ``bin/blender``; returns the former."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    runner = bin_dir / "rootfs-run"
    _write_executable(
        runner,
        ROOTFS_RUN.format(
            self=shlex.quote(str(runner)),
            rootfs=shlex.quote(str(rootfs)),
            repo=shlex.quote(str(repo)),
            suite=SUITE,
        ),
    )
    _write_executable(
        bin_dir / "blender",
        "#!/bin/sh\n# Written by buildtools/blender_binary.py: the rootfs's Blender (see rootfs-run).\n"
        f'exec {shlex.quote(str(runner))} /usr/bin/blender "$@"\n',
    )
    return runner


def _write_executable(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    partial = path.with_suffix(".partial")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(0o755)
    partial.replace(path)


def _size_mib(folder: Path) -> str:
    done = subprocess.run(["du", "-sxm", str(folder)], capture_output=True, text=True, check=False)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout else "?"


# Every step execs the next (unshare without --fork, this script again, chroot, sh, COMMAND), so COMMAND
# keeps the caller's pid: signals reach it directly and its exit status and output come back unchanged.
# bwrap would need no second pass, but it runs COMMAND as its child and does not forward signals to it.
ROOTFS_RUN = r"""#!/bin/sh
# Written by buildtools/blender_binary.py (edit that, not this): runs COMMAND from the Debian {suite}
# rootfs as if it were installed here, with the caller's environment and current folder. This machine's
# /tmp, the repository, the current folder, $XDG_RUNTIME_DIR and VERIFRAME_ROOTFS_BINDS (a:b:c) are
# shared at the same paths, with /proc, /dev and /sys (read-only). The mounts live in a private mount
# namespace, so they vanish with COMMAND; each step execs the next, so COMMAND keeps this pid.
set -eu
SELF={self}
ROOTFS={rootfs}
REPO={repo}
MARK=--veriframe-rootfs-namespace
if [ "$#" -eq 0 ]; then echo "usage: $SELF COMMAND [ARG...]" >&2; exit 2; fi
if [ "$(id -u)" -ne 0 ]; then echo "$SELF: needs root (mount namespace and chroot)" >&2; exit 126; fi
if [ "$1" != "$MARK" ]; then
    exec unshare --mount --propagation private -- "$SELF" "$MARK" "$@"
fi
shift
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "$SELF: refusing to mount outside a private mount namespace" >&2; exit 126
fi
share() {{
    case "$1" in /*) ;; *) return 0 ;; esac
    [ -d "$1" ] || return 0
    mkdir -p "$ROOTFS$1"
    mount --rbind "$1" "$ROOTFS$1"
}}
mount -t proc proc "$ROOTFS/proc" 2>/dev/null || mount --rbind /proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --rbind /sys "$ROOTFS/sys"
mount -o remount,bind,ro "$ROOTFS/sys" 2>/dev/null || true
share /tmp
share "$REPO"
top=${{PWD#/}}
top=/${{top%%/*}}
case "$PWD" in
    "$REPO" | "$REPO"/* | /tmp | /tmp/*) ;;  # shared already
    *) case "$top" in
        / | /bin | /boot | /dev | /etc | /lib | /lib64 | /proc | /run | /sbin | /sys | /usr | /var) ;;
        *) share "$PWD" ;;  # not the rootfs's own system folders
    esac ;;
esac
share "${{XDG_RUNTIME_DIR:-}}"
set -f
old_ifs=$IFS
IFS=:
for dir in ${{VERIFRAME_ROOTFS_BINDS:-}}; do
    IFS=$old_ifs
    share "$dir"
done
IFS=$old_ifs
exec chroot "$ROOTFS" /bin/sh -c '
    cd "$1" 2>/dev/null || cd /
    shift
    program=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; command -v "$1") || {{
        echo "rootfs-run: $1: not found in the rootfs" >&2
        exit 127
    }}
    shift
    exec "$program" "$@"
' rootfs-run "$PWD" "$@"
"""
