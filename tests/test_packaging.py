"""The extension zips: ``python3 build.py build`` run for real, its zips opened, validated and used.

The build runs once for this module and reuses ``.cache/wheels``, so only a cold cache downloads. The key
test gives a bare Python (``-I -S``: the standard library and nothing else) only what Blender would have:
the linux-x64 zip's wheels for Python 3.11, plus copies of the packages Blender bundles itself, and signs a
challenge and verifies CIDs there, so a wheel missing from the lock fails here rather than inside Blender.
Where a Blender binary is at hand (``blender_binary``), it builds the zips too, and installs the linux one
with its own installer and signs inside it.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildtools.packaging import (
    DIST_DIR,
    MANIFEST,
    STAGE_DIR,
    VENDORED,
    HashMismatch,
    Lock,
    MissingWheel,
    PackagingError,
    build_platform_zips,
    check_manifest_matches_lock,
    extension_command,
    fetch_locked_wheels,
    find_blender_ext_cli,
    manifest_wheels,
    missing_lines,
    normalize_name,
    platform_support,
    read_lock,
    support_text,
    target_key,
    write_manifest_wheels,
)
from devnet.process import ROOT

VENV = Path(sys.prefix)
# What Blender's own Python carries that the worker core uses (Blender's build_files/build_environment pins
# these, as it does numpy and zstandard, which the worker does not import).
BLENDER_BUNDLED = ("requests", "urllib3", "certifi", "idna", "charset-normalizer")
EXPECTED_FILES = ("blender_manifest.toml", "__init__.py", "worker/loop.py", "render_child.py", "SUPPORT.txt")
STARK_KEY = 0x3C1E9550E66958296D11B60F8E8E7A7AD990D07FA65D5F7652C4A6C87D4E3CC
CHALLENGE = 0x5D41402ABC4B2A76B9719D911017C592


@dataclass
class Build:
    lock: Lock
    zips: dict[str, Path]
    output: str


@pytest.fixture(scope="module")
def build() -> Build:
    """``python3 build.py build`` with the bpy wheel's builder (BLENDER_PATH would pick a binary's)."""
    env = {k: v for k, v in os.environ.items() if k != "BLENDER_PATH"}
    done = subprocess.run(
        [sys.executable, "build.py", "build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lock = read_lock()
    manifest = tomllib.loads(MANIFEST.read_text())
    zips = {
        platform: DIST_DIR / f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"
        for platform in manifest["platforms"]
    }
    return Build(lock, zips, output)


def wheel_names(archive: zipfile.ZipFile) -> set[str]:
    return {Path(name).name for name in archive.namelist() if name.startswith("wheels/")}


def test_each_platform_zip_holds_the_addon_and_only_its_wheels(build: Build) -> None:
    assert set(build.zips) == set(build.lock.platforms) == {"linux-x64", "windows-x64", "macos-arm64"}
    for platform, path in build.zips.items():
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for expected in EXPECTED_FILES:
                assert expected in names, f"{path.name} lacks {expected}"
            for name in names:
                parts = name.split("/")
                assert parts[0] not in {"devnet", "tests", "dist"}, f"{path.name} ships {name}"
                assert "__pycache__" not in parts and not name.endswith(".pyc"), f"{path.name} ships {name}"
            shipped = wheel_names(archive)
        assert shipped == {wheel.filename for wheel in build.lock.wheels_for_platform(platform)}
        for filename in shipped:
            tag = filename.removesuffix(".whl").split("-")[-1]
            native = {"linux-x64": "x86_64", "windows-x64": "win_amd64", "macos-arm64": "macosx_"}[platform]
            assert tag == "any" or native in tag, (
                f"{path.name} carries {filename}, a wheel for another platform"
            )


def test_blenders_validator_accepts_each_zip(build: Build) -> None:
    cli = find_blender_ext_cli(VENV)
    for path in build.zips.values():
        done = subprocess.run(
            [sys.executable, str(cli), "validate", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Success parsing TOML" in done.stdout


def test_shipped_and_cached_wheels_have_the_locked_hashes(build: Build) -> None:
    pinned = {wheel.filename: wheel.sha256 for wheel in build.lock.wheels}
    for filename, sha256 in pinned.items():
        assert hashlib.sha256((ROOT / ".cache" / "wheels" / filename).read_bytes()).hexdigest() == sha256
    for path in build.zips.values():
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.startswith("wheels/"):
                    assert hashlib.sha256(archive.read(name)).hexdigest() == pinned[Path(name).name], name


def test_manifest_wheel_list_is_the_lock(build: Build) -> None:
    assert sorted(manifest_wheels()) == sorted(f"./wheels/{wheel.filename}" for wheel in build.lock.wheels)
    for platform, path in build.zips.items():
        with zipfile.ZipFile(path) as archive:
            shipped = tomllib.loads(archive.read("blender_manifest.toml").decode())
        generated = shipped["build"]["generated"]
        assert generated["platforms"] == [platform]
        expected = {f"./wheels/{wheel.filename}" for wheel in build.lock.wheels_for_platform(platform)}
        assert set(generated["wheels"]) == expected


def test_committed_manifest_is_what_the_updater_writes(build: Build, tmp_path: Path) -> None:
    copy = tmp_path / MANIFEST.name
    copy.write_text(MANIFEST.read_text())
    write_manifest_wheels((wheel.filename for wheel in build.lock.wheels), copy)
    assert copy.read_text() == MANIFEST.read_text()
    short = tuple(wheel for wheel in build.lock.wheels if wheel.name != "six")
    write_manifest_wheels((wheel.filename for wheel in short), copy)
    with pytest.raises(PackagingError, match=r"six-1\.17\.0"):
        check_manifest_matches_lock(build.lock, copy)


def test_lock_serves_every_requirement_on_every_target(build: Build) -> None:
    """Each vendored distribution has exactly one wheel per (Python, platform), or is recorded missing."""
    assert build.lock.requirements == VENDORED
    missing = {(entry.requirement, entry.target) for entry in build.lock.missing}
    for target in build.lock.targets():
        served = [normalize_name(wheel.name) for wheel in build.lock.wheels_for(target)]
        assert len(served) == len(set(served)), f"two wheels of one distribution for {target}: {served}"
        for requirement in VENDORED:
            name = normalize_name(requirement.partition("==")[0])
            assert (name in served) != ((requirement, target) in missing), (requirement, target)
    assert set(build.lock.pythons) == {"3.11", "3.13"}


def test_manifest_agrees_with_bl_info() -> None:
    manifest = tomllib.loads(MANIFEST.read_text())
    tree = ast.parse((ROOT / "veriframe_addon" / "__init__.py").read_text())
    bl_info = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "bl_info" for t in node.targets)
    )
    assert manifest["name"] == bl_info["name"]
    assert tuple(int(part) for part in manifest["version"].split(".")) == bl_info["version"]
    assert tuple(int(part) for part in manifest["blender_version_min"].split(".")) == bl_info["blender"]
    assert len(manifest["tagline"]) <= 64 and manifest["tagline"][-1].isalnum()


def test_support_file_names_each_platforms_blender_versions(build: Build) -> None:
    with zipfile.ZipFile(build.zips["macos-arm64"]) as archive:
        support = archive.read("SUPPORT.txt").decode()
    assert "macos-arm64  Blender 4.2 to 5.0 (Python 3.11), Blender 5.1 and later (Python 3.13)" in support
    # crypto-cpp-py 2.0.0's only macOS wheels are macosx_12_0: the file must not promise macOS 11.
    assert "macOS 12.0 or later" in support
    for line in missing_lines(build.lock):
        assert line in build.output


def test_a_missing_wheel_is_named_and_narrows_that_platforms_support(build: Build) -> None:
    gap = MissingWheel("crypto-cpp-py==2.0.0", target_key("3.13", "windows-x64"), "no wheel on PyPI")
    lock = dataclasses.replace(build.lock, missing=(gap,))
    assert missing_lines(lock) == [
        "NOT SUPPORTED: Blender 5.1 and later (Python 3.13) on windows-x64: "
        "crypto-cpp-py==2.0.0 has no wheel (no wheel on PyPI)"
    ]
    assert platform_support(lock, "windows-x64") == "Blender 4.2 to 5.0 (Python 3.11)"
    assert "Python 3.13" in platform_support(lock, "linux-x64")
    text = support_text(lock, "0.1.0")
    assert "windows-x64  Blender 4.2 to 5.0 (Python 3.11)\n" in text
    assert missing_lines(lock)[0] in text


def test_a_wheel_that_differs_from_its_pin_is_refused(build: Build, tmp_path: Path) -> None:
    wheel = next(w for w in build.lock.wheels if w.name == "six")
    tampered = tmp_path / wheel.filename
    shutil.copy2(ROOT / ".cache" / "wheels" / wheel.filename, tampered)
    with tampered.open("ab") as stream:
        stream.write(b"\0")
    lock = dataclasses.replace(build.lock, wheels=(wheel,))
    with pytest.raises(HashMismatch, match=wheel.sha256):
        fetch_locked_wheels(lock, Path(sys.executable), cache=tmp_path)


def extract_wheels(archive: zipfile.ZipFile, filenames: set[str], folder: Path) -> None:
    """What Blender does with an extension's wheels: unpack each into one site-packages folder."""
    for filename in filenames:
        with zipfile.ZipFile(archive.open(f"wheels/{filename}")) as wheel:
            wheel.extractall(folder)


def copy_installed(distribution: str, folder: Path) -> None:
    """This venv's copy of a package Blender bundles, as the stand-in for Blender's own."""
    dist = importlib.metadata.distribution(distribution)
    for file in dist.files or ():
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        target = folder / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(str(dist.locate_file(file))), target)


def top_level_modules(site: Path) -> dict[str, str]:
    """Top-level module -> distribution, for every wheel unpacked into ``site``."""
    owners = {}
    for record in site.glob("*.dist-info/RECORD"):
        distribution = record.parent.name.split("-")[0]
        for line in record.read_text().splitlines():
            top = line.split(",")[0].split("/")[0]
            if top and not top.endswith((".dist-info", ".data")):
                owners[top.removesuffix(".py")] = distribution
    return owners


PROBE = r"""
import hashlib, json, sys, sysconfig
vendored, bundled, addon_root = sys.argv[1:4]
key, challenge = int(sys.argv[4], 16), int(sys.argv[5], 16)
sys.path += [addon_root, vendored, bundled]

from starknet_py.hash.utils import message_signature, private_to_stark_key, verify_message_signature
r, s = message_signature(challenge, key)
public = private_to_stark_key(key)
assert verify_message_signature(challenge, [r, s], public)
assert not verify_message_signature(challenge + 1, [r, s], public)

from veriframe_addon.worker.backend.auth import StarkSigner
assert StarkSigner(key).sign(hex(challenge)) == [hex(r), hex(s)]

from veriframe_addon.worker.ipfs.cid import CidVerifier
from veriframe_addon.worker.errors import ContentMismatch
stream = b"".join(hashlib.sha256(f"veriframe:{i}".encode()).digest() for i in range(262145 // 32 + 1))
for cid, data in [
    ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", b"hello world\n"),
    ("bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e", stream[:262145]),
]:
    verifier = CidVerifier(cid)
    verifier.update(data)
    assert str(verifier.verify()) == cid
verifier = CidVerifier("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
verifier.update(b"hello world")
try:
    verifier.verify()
    raise AssertionError("other bytes verified")
except ContentMismatch:
    pass

import veriframe_addon.worker.loop  # the whole worker core, requests included

stdlib = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib")}
files = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()}
print(json.dumps({
    "signature": [hex(r), hex(s)],
    "public": hex(public),
    "modules": {name: file for name, file in files.items() if file},
    "stdlib": sorted(stdlib),
}))
"""


@pytest.fixture
def blender_like_python(build: Build, tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """Folders for a bare Python: the zip's cp311 wheels, Blender's bundled packages, the zip's add-on."""
    vendored, bundled, addon_root = tmp_path / "vendored", tmp_path / "blender-bundled", tmp_path / "addon"
    cp311 = {wheel.filename for wheel in build.lock.wheels_for(target_key("3.11", "linux-x64"))}
    with zipfile.ZipFile(build.zips["linux-x64"]) as archive:
        assert cp311 <= wheel_names(archive)
        assert all("cp313" in name for name in wheel_names(archive) - cp311)
        extract_wheels(archive, cp311, vendored)
        package = addon_root / "veriframe_addon"
        archive.extractall(package, [n for n in archive.namelist() if n.endswith(".py")])
    for distribution in BLENDER_BUNDLED:
        copy_installed(distribution, bundled)
    yield vendored, bundled, addon_root


@pytest.mark.skipif(sys.platform != "linux" or sys.version_info[:2] != (3, 11), reason="runs linux-x64 cp311")
def test_vendored_wheels_sign_and_verify_cids_in_a_python_with_only_blenders_packages(
    blender_like_python: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    vendored, bundled, addon_root = blender_like_python
    # -I -S: no site-packages, no PYTHON* variables, no current folder; only what PROBE puts on sys.path.
    folders = [str(vendored), str(bundled), str(addon_root)]
    command = [sys.executable, "-I", "-S", "-c", PROBE, *folders, hex(STARK_KEY), hex(CHALLENGE)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])

    # The same deterministic (RFC 6979) signature as this venv's starknet-py gives.
    from starknet_py.hash.utils import message_signature, private_to_stark_key

    assert result["signature"] == [hex(v) for v in message_signature(CHALLENGE, STARK_KEY)]
    assert result["public"] == hex(private_to_stark_key(STARK_KEY))

    # Every module came from the standard library, the wheels, Blender's packages or the add-on itself.
    roots = [*result["stdlib"], str(vendored), str(bundled), str(addon_root)]
    strays = {name: file for name, file in result["modules"].items() if not file.startswith(tuple(roots))}
    assert not strays, f"imported from outside Blender's world: {strays}"

    # And every vendored distribution was needed: the lock carries no dead weight.
    owners = top_level_modules(vendored)
    used = {owners[name] for name in result["modules"] if name in owners}
    assert used == set(owners.values()), f"vendored but never imported: {set(owners.values()) - used}"


@pytest.mark.timeout(600)
def test_a_blender_binary_builds_and_validates_the_same_zips(
    build: Build, blender_binary: Path, tmp_path: Path
) -> None:
    """``BLENDER_PATH`` builds with ``blender --command extension`` instead of the bpy wheel's copy."""
    out = tmp_path / "dist"
    command = extension_command(Path(sys.executable), VENV, str(blender_binary))
    zips = build_platform_zips(command, STAGE_DIR, out)
    for platform, path in zips.items():
        with zipfile.ZipFile(path) as archive, zipfile.ZipFile(build.zips[platform]) as reference:
            assert sorted(archive.namelist()) == sorted(reference.namelist())


BLENDER_PROBE = r"""
import importlib, json, sys
import bpy
from starknet_py.hash.utils import message_signature, private_to_stark_key, verify_message_signature
import crypto_cpp_py

key, challenge, out = int(sys.argv[-3], 16), int(sys.argv[-2], 16), sys.argv[-1]
r, s = message_signature(challenge, key)
assert verify_message_signature(challenge, [r, s], private_to_stark_key(key))
cid = importlib.import_module("bl_ext.user_default.veriframe_addon.worker.ipfs.cid")
verifier = cid.CidVerifier("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
verifier.update(b"hello world\n")
with open(out, "w") as stream:
    json.dump({
        "enabled": "bl_ext.user_default.veriframe_addon" in bpy.context.preferences.addons,
        "python": "cp%d%d" % sys.version_info[:2],
        "signature": [hex(r), hex(s)],
        "cid": str(verifier.verify()),
        "crypto_cpp_py": crypto_cpp_py.__file__,
    }, stream)
"""


@pytest.mark.timeout(600)
def test_blender_installs_the_linux_zip_and_signs_inside_it(
    build: Build, blender_binary: Path, tmp_path: Path
) -> None:
    """Blender's own installer picks the wheels for its Python, and the worker signs inside that Blender."""
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    for distribution in BLENDER_BUNDLED:  # for distro Blenders (Debian's) that lack them
        copy_installed(distribution, bundled)
    # A throwaway user folder: the extension, and the site-packages Blender unpacks its wheels into.
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user), PYTHONPATH=str(bundled))
    blender = [str(blender_binary), "--python-use-system-env"]

    def run_blender(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*blender, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )

    zip_path = str(build.zips["linux-x64"])
    done = run_blender(
        "--command", "extension", "install-file", "--repo", "user_default", "--enable", zip_path
    )
    assert done.returncode == 0 and 'Installed "veriframe_addon"' in done.stdout, done.stdout + done.stderr
    probe, result = tmp_path / "probe.py", tmp_path / "result.json"
    probe.write_text(BLENDER_PROBE)
    done = run_blender(
        "-b",
        "--python-exit-code",
        "1",
        "--python",
        str(probe),
        "--",
        hex(STARK_KEY),
        hex(CHALLENGE),
        str(result),
    )
    assert done.returncode == 0 and result.exists(), done.stdout + done.stderr
    seen = json.loads(result.read_text())

    from starknet_py.hash.utils import message_signature

    assert seen["enabled"]
    assert seen["signature"] == [hex(v) for v in message_signature(CHALLENGE, STARK_KEY)]
    assert seen["cid"] == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    site = user / "extensions" / ".local" / "lib"
    assert seen["crypto_cpp_py"].startswith(str(site))
    installed = next(site.glob("python3*/site-packages/crypto_cpp_py-*.dist-info/WHEEL")).read_text()
    assert f"Tag: {seen['python']}-{seen['python']}-" in installed
