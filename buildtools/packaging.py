"""Packaging the extension: the wheel lock, fetching and checking wheels, staging, Blender's builder.

Inside Blender the worker core can only import what Blender's Python ships (``requests`` and friends,
``numpy``, ``zstandard``) plus the wheels the extension carries. Those wheels are pinned with their sha256 in
``wheels/lock.json`` so every build ships the same bytes, for each Python Blender has used since 4.2 and each
platform the manifest declares. ``update_lock`` writes the lock (``python3 build.py lock``);
``build_extension`` turns it into one zip per platform (``python3 build.py build``).

Stdlib only: ``build.py`` imports this with the machine's python3, before any virtual environment exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

log = logging.getLogger("build.packaging")

ROOT = Path(__file__).resolve().parent.parent
ADDON_DIR = ROOT / "veriframe_addon"
MANIFEST = ROOT / "blender_manifest.toml"
LOCK_FILE = ROOT / "wheels" / "lock.json"
WHEEL_CACHE = ROOT / ".cache" / "wheels"
STAGE_DIR = ROOT / ".cache" / "stage" / "veriframe_addon"
DIST_DIR = ROOT / "dist"
SUPPORT_FILE = "SUPPORT.txt"

# Blender's Pythons: 3.11 from 4.2 LTS through 5.0, 3.13 from 5.1 on.
PYTHONS = {"3.11": "Blender 4.2 to 5.0", "3.13": "Blender 5.1 and later"}

# Blender platform -> the wheel platform tags pip may pick for it. Linux stops at manylinux_2_28 because
# Blender's own Linux builds need glibc 2.28. macOS starts at 12.0 (pip widens it to older releases and to
# universal2): crypto-cpp-py 2.0.0 publishes macosx_12_0 wheels only, so macOS 11 cannot sign.
PLATFORMS = {
    "linux-x64": (*(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)), "manylinux2014_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_12_0_arm64",),
}

# What the worker core imports inside Blender that Blender does not ship: measured, not guessed. In a clean
# venv with starknet-py and multiformats, importing ``message_signature``/``private_to_stark_key`` from
# ``starknet_py.hash.utils`` and ``veriframe_addon.worker.ipfs.cid`` loads exactly these distributions (the
# rest of starknet-py's declared dependencies, aiohttp, eth-keys, poseidon-py ..., is never imported on
# that path).
# tests/test_packaging.py proves the set is enough in a Python that has only these and Blender's packages.
VENDORED = (
    "starknet-py==0.30.0",
    "crypto-cpp-py==2.0.0",  # Stark-curve ECDSA in C++, called by message_signature
    "ecdsa==0.19.2",  # imported by crypto_cpp_py
    "six==1.17.0",  # imported by ecdsa
    "sympy==1.14.0",  # imported by crypto_cpp_py
    "mpmath==1.3.0",  # imported by sympy
    "pycryptodome==3.24.1",  # Crypto.Hash (keccak), imported by starknet_py.hash.utils
    "marshmallow==3.26.2",  # imported by starknet_py.common
    "packaging==26.4",  # imported by marshmallow
    "marshmallow-oneofschema==3.2.0",  # imported by starknet_py.abi
    "lark==1.3.1",  # imported by starknet_py.cairo (the ABI type parser)
    "multiformats==0.3.1.post4",  # CIDs and multihashes for verify-as-you-download
    "multiformats-config==0.3.1",  # imported by multiformats
    "bases==0.3.0",  # imported by multiformats (multibase)
    "typing-validation==1.2.12",  # imported by multiformats
    "typing-extensions==4.16.0",  # imported by multiformats; Blender 4.2 to 4.5 do not ship it
    "prometheus-client==0.26.0",  # /metrics: counters, histograms and the text format (pure Python)
)

# starknet-py publishes no wheel, only an sdist: its pure-Python wheel is built here, from the sdist whose
# hash is locked, with this exact toolchain, a fixed timestamp and umask, so the wheel's hash is stable too.
BUILD_REQUIREMENTS = (
    "setuptools==84.2.1",
    "wheel==0.48.0",
    "build==1.6.1",
    "Cython==3.3.1",
    "packaging==26.4",
    "pyproject-hooks==1.3.3",
)
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry

_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_WHEELS_ARRAY = re.compile(r"^wheels = \[\n.*?^\]\n", re.MULTILINE | re.DOTALL)
_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


class PackagingError(Exception):
    """A packaging step failed; the message says which file or command, and what to do."""


class HashMismatch(PackagingError):
    """A wheel or sdist does not have the sha256 the lock pins: it is refused, never shipped."""


@dataclass(frozen=True)
class Sdist:
    filename: str
    sha256: str


@dataclass(frozen=True)
class LockedWheel:
    """One wheel file, and the ``python/platform`` targets (``3.11/linux-x64``) it serves."""

    name: str
    version: str
    filename: str
    sha256: str
    covers: tuple[str, ...]
    sdist: Sdist | None = None  # set when PyPI has no wheel and it is built from this sdist

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class MissingWheel:
    """A vendored distribution that has no usable wheel for one target: that Blender cannot sign or verify."""

    requirement: str
    target: str
    reason: str


@dataclass(frozen=True)
class Lock:
    pythons: dict[str, str]
    platforms: dict[str, tuple[str, ...]]
    requirements: tuple[str, ...]
    build_requirements: tuple[str, ...]
    wheels: tuple[LockedWheel, ...]
    missing: tuple[MissingWheel, ...] = field(default=())

    def targets(self) -> list[str]:
        return [target_key(python, platform) for platform in self.platforms for python in self.pythons]

    def wheels_for(self, target: str) -> list[LockedWheel]:
        return [wheel for wheel in self.wheels if target in wheel.covers]

    def wheels_for_platform(self, platform: str) -> list[LockedWheel]:
        return [wheel for wheel in self.wheels if any(c.endswith("/" + platform) for c in wheel.covers)]


def target_key(python: str, platform: str) -> str:
    return f"{python}/{platform}"


def split_target(target: str) -> tuple[str, str]:
    python, _, platform = target.partition("/")
    return python, platform


def normalize_name(name: str) -> str:
    """PEP 503 names, with ``_`` as wheel filenames spell them, so ``crypto-cpp-py`` matches its file."""
    return re.sub(r"[-_.]+", "_", name).lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise HashMismatch(
            f"{path.name} hashes to {actual}, but wheels/lock.json pins {expected}: refusing it "
            f"(delete {path} to fetch it again; if the change is intended, run python3 build.py lock)"
        )


# --- the lock file ------------------------------------------------------------------------------------------


def read_lock(path: Path = LOCK_FILE) -> Lock:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackagingError(f"{path} is missing: run python3 build.py lock") from None
    wheels = tuple(
        LockedWheel(
            name=entry["name"],
            version=entry["version"],
            filename=entry["filename"],
            sha256=entry["sha256"],
            covers=tuple(entry["covers"]),
            sdist=Sdist(**entry["sdist"]) if entry.get("sdist") else None,
        )
        for entry in data["wheels"]
    )
    return Lock(
        pythons=dict(data["pythons"]),
        platforms={name: tuple(tags) for name, tags in data["platforms"].items()},
        requirements=tuple(data["requirements"]),
        build_requirements=tuple(data["build_requirements"]),
        wheels=wheels,
        missing=tuple(MissingWheel(**entry) for entry in data["missing"]),
    )


def write_lock(lock: Lock, path: Path = LOCK_FILE) -> None:
    data = {
        "generated_by": "python3 build.py lock (pins: VENDORED in buildtools/packaging.py); do not edit",
        "pythons": lock.pythons,
        "platforms": {name: list(tags) for name, tags in lock.platforms.items()},
        "requirements": list(lock.requirements),
        "build_requirements": list(lock.build_requirements),
        "wheels": [asdict(wheel) for wheel in sorted(lock.wheels, key=lambda w: w.filename)],
        "missing": [asdict(entry) for entry in lock.missing],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def manifest_data(path: Path = MANIFEST) -> dict[str, object]:
    with path.open("rb") as stream:
        return tomllib.load(stream)


def manifest_wheels(path: Path = MANIFEST) -> list[str]:
    wheels = manifest_data(path).get("wheels", [])
    assert isinstance(wheels, list)
    return [str(wheel) for wheel in wheels]


def write_manifest_wheels(filenames: Iterable[str], path: Path = MANIFEST) -> None:
    """Rewrites only the manifest's ``wheels = [...]`` array, keeping the rest of the file as written."""
    text = path.read_text()
    lines = "".join(f'  "./wheels/{name}",\n' for name in sorted(filenames))
    new_text, count = _WHEELS_ARRAY.subn(lambda _: f"wheels = [\n{lines}]\n", text, count=1)
    if count != 1:
        raise PackagingError(f"{path} has no multi-line `wheels = [` ... `]` array to rewrite")
    path.write_text(new_text)


def check_manifest_matches_lock(lock: Lock, path: Path = MANIFEST) -> None:
    declared = sorted(manifest_wheels(path))
    locked = sorted(f"./wheels/{wheel.filename}" for wheel in lock.wheels)
    if declared != locked:
        raise PackagingError(
            f"{path.name} lists other wheels than wheels/lock.json "
            f"(only in the manifest: {sorted(set(declared) - set(locked))}, "
            f"only in the lock: {sorted(set(locked) - set(declared))}): run python3 build.py lock"
        )


# --- pip ----------------------------------------------------------------------------------------------------


def pip_command(python: Path, *args: str) -> list[str]:
    return [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]


def pip_target_args(python_version: str, platform_tags: Sequence[str]) -> list[str]:
    """pip options that pick wheels for one Blender Python on one platform, never for this machine."""
    abi = "cp" + python_version.replace(".", "")
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version, "--abi", abi]
    for tag in platform_tags:
        args += ["--platform", tag]
    return args


def run_pip(python: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = pip_command(python, *args)
    log.debug("$ %s", " ".join(command))
    # A fixed umask keeps the file modes inside a wheel built from an sdist, and so its hash, stable.
    umask = 0o022 if os.name == "posix" else -1
    return subprocess.run(command, capture_output=True, text=True, env=env, umask=umask, check=False)


def pip_failure(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if "is ignored" not in line]
    return "\n".join(lines[-12:])


def download_for_target(
    python: Path, requirements: Sequence[str], python_version: str, platform_tags: Sequence[str], dest: Path
) -> tuple[list[Path], dict[str, str]]:
    """Downloads the wheels of ``requirements`` for one target into ``dest``.

    Returns the files and, per requirement that has no wheel for this target, pip's reason. One pip call per
    target keeps ``lock`` quick; a requirement pip cannot match is dropped and the rest retried. Any other pip
    failure (network, index) raises, so a broken connection never turns into a "missing" wheel.
    """
    dest.mkdir(parents=True, exist_ok=True)
    pending = list(requirements)
    missing: dict[str, str] = {}
    while pending:
        target_args = pip_target_args(python_version, platform_tags)
        done = run_pip(python, "download", "--no-deps", "--dest", str(dest), *target_args, *pending)
        if done.returncode == 0:
            break
        match = _NO_MATCH.search(done.stderr)
        wanted = {normalize_name(r.partition("==")[0]): r for r in pending}
        failed = wanted.get(normalize_name(match.group(1).partition("==")[0])) if match else None
        if failed is None:
            raise PackagingError(f"pip download failed for Python {python_version}:\n{pip_failure(done)}")
        missing[failed] = f"no wheel on PyPI for cp{python_version.replace('.', '')} on {platform_tags[0]}"
        pending.remove(failed)
    return sorted(dest.glob("*.whl")), missing


def download_sdist(python: Path, requirement: str, build_constraints: Path, dest: Path) -> Path:
    name = requirement.partition("==")[0]
    # --no-binary for this one name only: pip applies it to the build backend's install too.
    options = ["--no-deps", f"--no-binary={name}", "--build-constraint", str(build_constraints)]
    done = run_pip(python, "download", *options, "--dest", str(dest), requirement)
    if done.returncode != 0:
        raise PackagingError(f"pip could not download the sdist of {requirement}:\n{pip_failure(done)}")
    sdists = [p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip"))]
    if len(sdists) != 1:
        raise PackagingError(f"expected one sdist of {requirement} in {dest}, found {sdists}")
    return sdists[0]


def build_wheel_from_sdist(python: Path, sdist: Path, build_constraints: Path, dest: Path) -> Path:
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    options = ["--no-deps", "--build-constraint", str(build_constraints), "--wheel-dir", str(dest)]
    done = run_pip(python, "wheel", *options, str(sdist), env=env)
    if done.returncode != 0:
        raise PackagingError(f"pip could not build a wheel from {sdist.name}:\n{pip_failure(done)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PackagingError(f"expected one wheel built from {sdist.name} in {dest}, found {wheels}")
    return wheels[0]


def write_build_constraints(requirements: Sequence[str], folder: Path) -> Path:
    path = folder / "build-constraints.txt"
    path.write_text("".join(f"{line}\n" for line in requirements))
    return path


def is_pure_wheel(filename: str) -> bool:
    return filename.removesuffix(".whl").rsplit("-", 3)[-2:] == ["none", "any"]


# --- python3 build.py lock ----------------------------------------------------------------------------------


def update_lock(python: Path, lock_path: Path = LOCK_FILE, manifest: Path = MANIFEST) -> Lock:
    """Regenerates the lock from ``VENDORED`` for every target, then the manifest's wheel list from the lock.

    The downloads are kept in ``.cache/wheels`` so the next build starts warm.
    """
    found: dict[str, LockedWheel] = {}
    missing: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="veriframe-lock-") as tmp:
        for platform, tags in PLATFORMS.items():
            for python_version in PYTHONS:
                target = target_key(python_version, platform)
                log.info("locking wheels for %s", target)
                dest = Path(tmp) / target.replace("/", "-")
                files, target_missing = download_for_target(python, VENDORED, python_version, tags, dest)
                for requirement, reason in target_missing.items():
                    missing[(requirement, target)] = reason
                for path in files:
                    _record(found, path, target)
        for requirement in _missing_everywhere(missing):
            wheel = _lock_from_sdist(python, requirement, Path(tmp) / "sdist")
            if wheel is None:
                continue
            found[wheel.filename] = wheel
            for target in wheel.covers:
                missing.pop((requirement, target), None)
    lock = Lock(
        pythons=dict(PYTHONS),
        platforms=dict(PLATFORMS),
        requirements=VENDORED,
        build_requirements=BUILD_REQUIREMENTS,
        wheels=tuple(sorted(found.values(), key=lambda w: w.filename)),
        missing=tuple(MissingWheel(req, target, reason) for (req, target), reason in sorted(missing.items())),
    )
    write_lock(lock, lock_path)
    write_manifest_wheels((wheel.filename for wheel in lock.wheels), manifest)
    for line in missing_lines(lock):
        log.warning("%s", line)
    log.info("locked %d wheels for %d targets into %s", len(lock.wheels), len(lock.targets()), lock_path)
    return lock


def _record(found: dict[str, LockedWheel], path: Path, target: str) -> None:
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    known = found.get(path.name)
    if known is not None:
        found[path.name] = replace(known, covers=(*known.covers, target))
        return
    name, version = path.name.split("-")[:2]
    requirement = next(r for r in VENDORED if normalize_name(r.partition("==")[0]) == normalize_name(name))
    shutil.copy2(path, WHEEL_CACHE / path.name)
    found[path.name] = LockedWheel(
        requirement.partition("==")[0], version, path.name, sha256_of(path), (target,)
    )


def _missing_everywhere(missing: dict[tuple[str, str], str]) -> list[str]:
    every_target = {target_key(py, platform) for platform in PLATFORMS for py in PYTHONS}
    by_requirement: dict[str, set[str]] = {}
    for requirement, target in missing:
        by_requirement.setdefault(requirement, set()).add(target)
    return sorted(req for req, targets in by_requirement.items() if targets == every_target)


def _lock_from_sdist(python: Path, requirement: str, folder: Path) -> LockedWheel | None:
    """For a distribution with no wheel anywhere: a wheel built from its sdist, if that wheel is pure."""
    folder.mkdir(parents=True, exist_ok=True)
    constraints = write_build_constraints(BUILD_REQUIREMENTS, folder)
    work = Path(tempfile.mkdtemp(dir=folder))
    sdist = download_sdist(python, requirement, constraints, work / "sdist")
    wheel = build_wheel_from_sdist(python, sdist, constraints, work / "wheel")
    if not is_pure_wheel(wheel.name):
        log.warning(
            "%s builds a platform wheel (%s) from its sdist: it cannot be vendored", requirement, wheel
        )
        return None
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, WHEEL_CACHE / wheel.name)
    log.info("built %s from %s (PyPI has no wheel of %s)", wheel.name, sdist.name, requirement)
    name, version = requirement.split("==")
    covers = tuple(target_key(py, platform) for platform in PLATFORMS for py in PYTHONS)
    return LockedWheel(
        name, version, wheel.name, sha256_of(wheel), covers, Sdist(sdist.name, sha256_of(sdist))
    )


# --- python3 build.py build: fetch and verify ---------------------------------------------------------------


def fetch_locked_wheels(lock: Lock, python: Path, cache: Path = WHEEL_CACHE) -> list[Path]:
    """Every locked wheel in ``cache``, each checked against its pinned sha256; fetches what is missing.

    A cached file with the wrong hash is refused, not replaced: something changed it, and a person should
    look before it is deleted.
    """
    cache.mkdir(parents=True, exist_ok=True)
    absent = [wheel for wheel in lock.wheels if not (cache / wheel.filename).exists()]
    if absent:
        log.info("fetching %d wheels into %s", len(absent), cache)
        with tempfile.TemporaryDirectory(prefix="veriframe-fetch-", dir=cache.parent) as tmp:
            _download_locked(lock, python, [w for w in absent if w.sdist is None], Path(tmp), cache)
            for wheel in (w for w in absent if w.sdist is not None):
                _build_locked(lock, python, wheel, Path(tmp) / wheel.name, cache)
    paths = []
    for wheel in lock.wheels:
        path = cache / wheel.filename
        verify_sha256(path, wheel.sha256)
        paths.append(path)
    log.info("%d wheels match wheels/lock.json", len(paths))
    return paths


def _download_locked(lock: Lock, python: Path, wheels: list[LockedWheel], tmp: Path, cache: Path) -> None:
    # One pip call per target; each wheel is fetched with the target it was first locked for.
    by_target: dict[str, list[LockedWheel]] = {}
    for wheel in wheels:
        by_target.setdefault(wheel.covers[0], []).append(wheel)
    for target, group in by_target.items():
        python_version, platform = split_target(target)
        dest = tmp / target.replace("/", "-")
        files, missing = download_for_target(
            python, [w.requirement for w in group], python_version, lock.platforms[platform], dest
        )
        got = {path.name: path for path in files}
        for wheel in group:
            if wheel.filename not in got:
                raise PackagingError(
                    f"pip no longer picks {wheel.filename} for {target} "
                    f"({missing.get(wheel.requirement, 'it chose ' + ', '.join(sorted(got)))}): "
                    "run python3 build.py lock"
                )
            verify_sha256(got[wheel.filename], wheel.sha256)
            shutil.move(got[wheel.filename], cache / wheel.filename)


def _build_locked(lock: Lock, python: Path, wheel: LockedWheel, tmp: Path, cache: Path) -> None:
    assert wheel.sdist is not None
    tmp.mkdir(parents=True)
    constraints = write_build_constraints(lock.build_requirements, tmp)
    sdist = download_sdist(python, wheel.requirement, constraints, tmp / "sdist")
    if sdist.name != wheel.sdist.filename:
        raise PackagingError(
            f"pip fetched {sdist.name} for {wheel.requirement}, the lock pins {wheel.sdist.filename}"
        )
    verify_sha256(sdist, wheel.sdist.sha256)
    built = build_wheel_from_sdist(python, sdist, constraints, tmp / "wheel")
    if built.name != wheel.filename:
        raise PackagingError(f"{sdist.name} built {built.name}, the lock pins {wheel.filename}")
    try:
        verify_sha256(built, wheel.sha256)
    except HashMismatch as exc:
        raise HashMismatch(
            f"{exc} (the sdist matched its pin, so the build toolchain differs from BUILD_REQUIREMENTS)"
        ) from None
    shutil.move(built, cache / wheel.filename)
    log.info("built %s from the locked sdist %s", wheel.filename, sdist.name)


# --- what each platform zip supports ------------------------------------------------------------------------


def missing_lines(lock: Lock) -> list[str]:
    """One line per target the lock cannot serve, naming the Blender versions that lose the worker."""
    lines = []
    for entry in lock.missing:
        python, platform = split_target(entry.target)
        lines.append(
            f"NOT SUPPORTED: {lock.pythons.get(python, 'Python ' + python)} (Python {python}) on {platform}: "
            f"{entry.requirement} has no wheel ({entry.reason})"
        )
    return lines


def supported_pythons(lock: Lock, platform: str) -> list[str]:
    lacking = {
        split_target(entry.target)[0] for entry in lock.missing if split_target(entry.target)[1] == platform
    }
    return [python for python in lock.pythons if python not in lacking]


def os_floor(platform: str, filenames: Iterable[str]) -> str:
    """The oldest OS every wheel runs on, read from the wheels' platform tags (e.g. ``macOS 12.0``)."""
    floors = []
    for filename in filenames:
        tags = filename.removesuffix(".whl").split("-")[-1].split(".")
        versions = [v for v in (_tag_os_version(tag) for tag in tags) if v is not None]
        if versions:
            floors.append(min(versions))
    if not floors:
        return ""
    major, minor = max(floors)
    if platform.startswith("linux"):
        return f"glibc {major}.{minor} or later"
    if platform.startswith("macos"):
        return f"macOS {major}.{minor} or later"
    return ""


def _tag_os_version(tag: str) -> tuple[int, int] | None:
    if match := re.fullmatch(r"(?:manylinux|macosx)_(\d+)_(\d+)_\w+", tag):
        return int(match.group(1)), int(match.group(2))
    return _MANYLINUX_LEGACY.get(tag.partition("_")[0])


def platform_support(lock: Lock, platform: str) -> str:
    pythons = supported_pythons(lock, platform)
    if not pythons:
        return "no Blender version: see the missing wheels below"
    line = ", ".join(f"{lock.pythons[python]} (Python {python})" for python in pythons)
    floor = os_floor(platform, (wheel.filename for wheel in lock.wheels_for_platform(platform)))
    return f"{line}; {floor}" if floor else line


def support_text(lock: Lock, version: str) -> str:
    width = max(len(platform) for platform in lock.platforms)
    rows = "".join(
        f"  {platform:<{width}}  {platform_support(lock, platform)}\n" for platform in lock.platforms
    )
    missing = "".join(f"  {line}\n" for line in missing_lines(lock)) or "  none\n"
    return (
        f"VeriFrame Worker {version}: where this extension works\n"
        "\n"
        "Each platform's zip carries the signing and CID wheels for the Blender Pythons listed on its row;\n"
        "Blender installs the ones matching its own Python. Use the zip named after your platform.\n"
        "\n"
        f"{rows}"
        "\n"
        "Blender versions whose Python lacks a wheel of a vendored package (the worker cannot start there):\n"
        f"{missing}"
    )


# --- staging and Blender's builder --------------------------------------------------------------------------


def stage_extension(lock: Lock, wheel_paths: Sequence[Path], stage: Path = STAGE_DIR) -> Path:
    """The extension's source tree as Blender's builder wants it: add-on files, manifest, wheels/."""
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(ADDON_DIR, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(MANIFEST, stage / MANIFEST.name)
    (stage / "wheels").mkdir()
    for path in wheel_paths:
        shutil.copy2(path, stage / "wheels" / path.name)
    version = str(manifest_data()["version"])
    (stage / SUPPORT_FILE).write_text(support_text(lock, version))
    return stage


def find_blender_ext_cli(venv: Path) -> Path:
    """Blender's extension builder as the ``bpy`` wheel ships it: a plain Python program, no ``bpy``."""
    tail = "bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"
    found = sorted(venv.glob(f"lib/python3*/site-packages/{tail}")) + sorted(
        venv.glob(f"Lib/site-packages/{tail}")
    )
    if not found:
        raise PackagingError(
            f"no {tail} under {venv}: the bpy wheel is missing (python3 build.py test sets it up)"
        )
    return found[-1]


def extension_command(python: Path, venv: Path, blender: str | None) -> list[str]:
    """The command that takes ``build``/``validate``: a Blender binary's, or the bpy wheel's copy."""
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    return [str(python), str(find_blender_ext_cli(venv))]


def run_extension_tool(command: list[str], *args: str) -> None:
    done = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        log.debug("blender_ext: %s", line)
    if done.returncode != 0:
        raise PackagingError(
            f"Blender's extension tool failed ({' '.join(args[:1])}, exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()}"
        )


def zip_name(extension_id: str, version: str, platform: str) -> str:
    return f"{extension_id}-{version}-{platform.replace('-', '_')}.zip"


def build_platform_zips(command: list[str], stage: Path, dist: Path) -> dict[str, Path]:
    """Runs Blender's ``build --split-platforms`` and then its ``validate`` on each zip; platform -> zip."""
    manifest = manifest_data(stage / MANIFEST.name)
    extension_id, version = str(manifest["id"]), str(manifest["version"])
    platforms = manifest["platforms"]
    assert isinstance(platforms, list)
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob(f"{extension_id}-*.zip"):
        old.unlink()
    run_extension_tool(
        command, "build", "--source-dir", str(stage), "--output-dir", str(dist), "--split-platforms"
    )
    zips = {str(platform): dist / zip_name(extension_id, version, str(platform)) for platform in platforms}
    absent = [path.name for path in zips.values() if not path.exists()]
    if absent:
        raise PackagingError(f"Blender's builder did not write {absent} into {dist}")
    for path in zips.values():
        run_extension_tool(command, "validate", str(path))
    return zips


def build_extension(
    python: Path, venv: Path, blender: str | None = None, dist: Path = DIST_DIR
) -> dict[str, Path]:
    """Lock -> verified wheels -> stage -> one validated zip per platform in ``dist``."""
    lock = read_lock()
    check_manifest_matches_lock(lock)
    for line in missing_lines(lock):
        log.warning("%s", line)
    wheel_paths = fetch_locked_wheels(lock, python)
    stage = stage_extension(lock, wheel_paths)
    command = extension_command(python, venv, blender)
    zips = build_platform_zips(command, stage, dist)
    for platform, path in zips.items():
        log.info(
            "%s (%.1f MiB): %s",
            path.relative_to(dist.parent),
            path.stat().st_size / 2**20,
            platform_support(lock, platform),
        )
    return zips
