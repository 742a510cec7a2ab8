"""Finding this machine's processes by their command line (Linux ``/proc``), for tests that check what
runs (a render child that must be gone, a secret that must not be on any argv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def command_lines() -> Iterator[tuple[int, bytes]]:
    """(pid, NUL-separated argv) of every process still there when read."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes()
            except OSError:  # it ended while we looked
                continue


def pids_with(*needles: str) -> list[int]:
    """Processes whose argv contains every one of ``needles``."""
    wanted = [needle.encode() for needle in needles]
    return [pid for pid, cmdline in command_lines() if all(n in cmdline for n in wanted)]


def render_children(data_dir: str | Path) -> list[int]:
    """The worker's render children (``render_child.py``) for jobs under ``data_dir``."""
    return pids_with("render_child.py", str(data_dir))


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment, from ``/proc`` (raises OSError once it is gone)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def rendering(data_dir: Path, job_id: str) -> list[int]:
    """The render child (and its sandbox) rendering ``job_id``: one started for it names the job in
    its argv; a warm standby does not, but its folder holds the job's scene, hard-linked (same inode)."""
    found = pids_with("render_child.py", job_id)
    jobs = data_dir / "jobs"
    try:
        scene = (jobs / job_id / "asset.blend").stat().st_ino
    except OSError:
        return found
    for folder in jobs.glob(".standby-*"):
        try:
            if (folder / "asset.blend").stat().st_ino != scene:
                continue
        except OSError:
            continue
        for pid in pids_with("render_child.py", "--standby"):
            try:
                home = environ_of(pid).get("HOME", "")
            except OSError:
                continue
            if home.startswith(str(folder)):
                found.append(pid)
    return found
