"""The worker's bpy-free core on real files: config, multiaddrs, assets, journal, settings, CIDs, render."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from veriframe_addon.worker.backend.api import FELT_STRING_LIMIT, Job, split_cid
from veriframe_addon.worker.config import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RENDER_TIMEOUT,
    STARK_EC_ORDER,
    STARK_FIELD_PRIME,
    load_config,
    parse_env_file,
)
from veriframe_addon.worker.errors import (
    AssetError,
    BackendError,
    ConfigError,
    JobSettingsError,
    RenderError,
)
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr
from veriframe_addon.worker.render.renderer import (
    CHILD_SCRIPT,
    ENV_ALLOWLIST,
    ENV_PREFIX_ALLOWLIST,
    BlenderCommand,
    child_environment,
    png_size,
)
from veriframe_addon.worker.scene.job_settings import (
    MAX_FRAME,
    MAX_SAMPLES,
    RenderSettings,
    parse_render_settings,
)
from veriframe_addon.worker.scene.unpack import extract_tar, extract_zip, find_blend, prepare_blend
from veriframe_addon.worker.state.journal import JobJournal

PRIVATE_KEY_HEX = "0x2bbf4f9fd0bbb2e60b0316c1fe0b76cf7a4d0198bd493ced9b8df2a3a24d68a"
ADDRESS_SHORT = "0x64b48806902a367c8598f4f95c305e8c1a1acba5f082d294a43793113115691"
BLEND_BYTES = b"BLENDER-v405REND" + bytes(range(256)) * 4

# ---------------------------------------------------------------------------------------------- config


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A complete, valid worker environment (the data folder is a real folder under tmp_path)."""
    return {
        "BACKEND_API_URL": "http://127.0.0.1:8000/api/v1",
        "WORKER_ADDRESS": ADDRESS_SHORT,
        "WORKER_PRIVATE_KEY": PRIVATE_KEY_HEX,
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
    }


def test_complete_environment_gives_the_expected_config(env: dict[str, str], tmp_path: Path) -> None:
    config = load_config(env)

    assert config.backend_url == "http://127.0.0.1:8000/api/v1"
    assert config.worker_address == "0x" + ADDRESS_SHORT[2:].rjust(64, "0")
    assert len(config.worker_address) == 66
    assert config.private_key == int(PRIVATE_KEY_HEX, 16)
    assert config.ipfs_api_url == "http://127.0.0.1:5001"
    assert config.ipfs_gateway_url == "http://127.0.0.1:8080/ipfs"
    assert config.poll_interval == DEFAULT_POLL_INTERVAL == 10
    assert config.render_timeout == DEFAULT_RENDER_TIMEOUT == 300
    assert config.blender_path is None
    assert config.data_dir == tmp_path / "data"
    assert config.journal_path == tmp_path / "data" / "completed_jobs.json"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/v1"),
        ("https://api.example.org/api/v1/", "https://api.example.org/api/v1"),
        ("https://api.example.org/custom/base", "https://api.example.org/custom/base"),
    ],
)
def test_backend_url_gets_api_v1_only_when_bare(env: dict[str, str], given: str, expected: str) -> None:
    assert load_config({**env, "BACKEND_API_URL": given}).backend_url == expected


def test_optional_settings_are_read(env: dict[str, str]) -> None:
    config = load_config(
        {
            **env,
            "WORKER_ADDRESS": "0xABC",
            "IPFS_API": "/dns4/ipfs.example.org/tcp/443/https",
            "IPFS_GATEWAY": "https://gw.example.org/ipfs/",
            "BLENDER_PATH": "/opt/blender/blender",
            "POLL_INTERVAL": "2.5",
            "RENDER_TIMEOUT": "90s",
        }
    )
    assert config.worker_address == "0x" + "0" * 61 + "abc"
    assert config.ipfs_api_url == "https://ipfs.example.org:443"
    assert config.ipfs_gateway_url == "https://gw.example.org/ipfs"
    assert config.blender_path == "/opt/blender/blender"
    assert config.poll_interval == 2.5
    assert config.render_timeout == 90


@pytest.mark.parametrize("name", ["BACKEND_API_URL", "WORKER_ADDRESS", "WORKER_PRIVATE_KEY"])
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_missing_required_variable_is_named(env: dict[str, str], name: str, blank: str | None) -> None:
    if blank is None:
        del env[name]
    else:
        env[name] = blank
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.variable == name
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_PRIVATE_KEY", "0xnothex"),
        ("WORKER_PRIVATE_KEY", "2bbf4f9fd0bbb2e60b0316c1fe0b76cf"),  # no 0x
        ("WORKER_PRIVATE_KEY", "0x0"),
        ("WORKER_PRIVATE_KEY", hex(STARK_EC_ORDER)),
        ("WORKER_PRIVATE_KEY", hex(STARK_EC_ORDER + 1)),
        ("WORKER_PRIVATE_KEY", "0x" + "f" * 65),
        ("WORKER_ADDRESS", "0xzz"),
        ("WORKER_ADDRESS", "0x0"),
        ("WORKER_ADDRESS", hex(STARK_FIELD_PRIME)),
        ("WORKER_ADDRESS", "1234"),
        ("BACKEND_API_URL", "ftp://127.0.0.1:8000/api/v1"),
        ("BACKEND_API_URL", "127.0.0.1:8000"),
        ("BACKEND_API_URL", "http://127.0.0.1:99999/api/v1"),
        ("BACKEND_API_URL", "http://127.0.0.1:port/api/v1"),
        ("BACKEND_API_URL", "http:///api/v1"),
        ("IPFS_API", "/ip4/1.2.3/tcp/5001"),
        ("IPFS_API", "/ip4/127.0.0.1"),
        ("IPFS_API", "/unix/run/ipfs.sock"),
        ("IPFS_API", "127.0.0.1:5001"),
        ("IPFS_GATEWAY", "ftp://127.0.0.1/ipfs"),
        ("POLL_INTERVAL", "abc"),
        ("POLL_INTERVAL", "-1"),
        ("POLL_INTERVAL", "inf"),
        ("POLL_INTERVAL", "nan"),
        ("POLL_INTERVAL", "0"),
        ("RENDER_TIMEOUT", "0.5"),
        ("RENDER_TIMEOUT", "five minutes"),
    ],
)
def test_malformed_value_is_refused_naming_its_variable(env: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**env, name: value})
    assert caught.value.variable == name
    assert str(caught.value).startswith(f"{name}: ")


def test_data_dir_that_is_a_file_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config({**env, "VERIFRAME_DATA_DIR": str(a_file)})
    assert caught.value.variable == "VERIFRAME_DATA_DIR"


@pytest.mark.parametrize(
    "bad_key",
    [
        hex(STARK_EC_ORDER + 12345),  # well-formed hex, out of range
        "0x2bbf4f9fd0bbb2e60b0316c1fe0b76cf7a4d0198bd493ced9b8df2a3a24d68g",  # one non-hex digit
        "2bbf4f9fd0bbb2e60b0316c1fe0b76cf7a4d0198bd493ced9b8df2a3a24d68a",  # missing 0x
    ],
)
def test_private_key_is_never_echoed_in_errors(env: dict[str, str], bad_key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**env, "WORKER_PRIVATE_KEY": bad_key})
    digits = bad_key.removeprefix("0x")
    assert digits[:16] not in str(caught.value)
    assert digits[:16] not in caught.value.problem


def test_private_key_is_not_in_the_config_repr(env: dict[str, str]) -> None:
    config = load_config(env)
    shown = repr(config) + str(config)
    assert PRIVATE_KEY_HEX[2:] not in shown.lower()
    assert str(int(PRIVATE_KEY_HEX, 16)) not in shown
    assert "private_key=" not in shown
    assert ADDRESS_SHORT[2:] in shown  # repr still shows the rest, so the check above means something


def write_env_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_env_file_with_comments_export_quotes_and_trailing_comments(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        "# VeriFrame worker settings\n"
        "\n"
        "export BACKEND_API_URL=http://127.0.0.1:8000   # the devnet\n"
        f'WORKER_ADDRESS="{ADDRESS_SHORT}"  # my account\n'
        f"WORKER_PRIVATE_KEY='{PRIVATE_KEY_HEX}'\n"
        "   # indented comment\n"
        "IPFS_API = /ip6/::1/tcp/5001\n"
        f"VERIFRAME_DATA_DIR={tmp_path / 'data'}\n"
        "POLL_INTERVAL=3 # seconds\n"
        "BLENDER_PATH=/opt/blender#4.5/blender\n",
    )
    assert parse_env_file(env_file) == {
        "BACKEND_API_URL": "http://127.0.0.1:8000",
        "WORKER_ADDRESS": ADDRESS_SHORT,
        "WORKER_PRIVATE_KEY": PRIVATE_KEY_HEX,
        "IPFS_API": "/ip6/::1/tcp/5001",
        "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
        "POLL_INTERVAL": "3",
        "BLENDER_PATH": "/opt/blender#4.5/blender",
    }

    config = load_config({}, env_file)
    assert config.backend_url == "http://127.0.0.1:8000/api/v1"
    assert config.worker_address.endswith(ADDRESS_SHORT[2:])
    assert config.private_key == int(PRIVATE_KEY_HEX, 16)
    assert config.ipfs_api_url == "http://[::1]:5001"
    assert config.poll_interval == 3


def test_real_environment_overrides_the_env_file(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        "BACKEND_API_URL=http://file-host:8000\n"
        f"WORKER_ADDRESS={ADDRESS_SHORT}\n"
        f"WORKER_PRIVATE_KEY={PRIVATE_KEY_HEX}\n"
        "POLL_INTERVAL=30\n",
    )
    config = load_config(
        {
            "BACKEND_API_URL": "http://env-host:9000/api/v1",
            "POLL_INTERVAL": "1",
            "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
        },
        env_file,
    )
    assert config.backend_url == "http://env-host:9000/api/v1"
    assert config.poll_interval == 1
    assert config.private_key == int(PRIVATE_KEY_HEX, 16)  # the file still fills what the env lacks


def test_malformed_env_line_is_reported_with_its_number_and_not_echoed(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        f"# settings\nWORKER_ADDRESS={ADDRESS_SHORT}\n\nWORKER_PRIVATE_KEY {PRIVATE_KEY_HEX}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config({}, env_file)
    assert caught.value.variable == str(env_file)
    assert "line 4" in str(caught.value)
    assert PRIVATE_KEY_HEX[2:12] not in str(caught.value)


def test_missing_env_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / ".env"
    with pytest.raises(ConfigError) as caught:
        load_config(env, missing)
    assert caught.value.variable == str(missing)


# ------------------------------------------------------------------------------------------- multiaddr


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("  /ip4/10.0.0.7/tcp/5001/  ", "http://10.0.0.7:5001"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
        ("/ip6/2001:db8::5/tcp/5001", "http://[2001:db8::5]:5001"),
        ("/dns4/ipfs.example.org/tcp/443/https", "https://ipfs.example.org:443"),
        ("/dns/node.local/tcp/5001/http", "http://node.local:5001"),
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001"),
        ("https://ipfs.example.org:5443/", "https://ipfs.example.org:5443"),
    ],
)
def test_api_url_from_multiaddr(text: str, url: str) -> None:
    assert api_url_from_multiaddr(text) == url


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/1.2.3/tcp/5001",
        "/ip4/127.0.0.1",
        "/ip4/127.0.0.1/tcp",
        "/ip4/127.0.0.1/tcp/0",
        "/ip4/127.0.0.1/tcp/65536",
        "/ip4/127.0.0.1/tcp/50x1",
        "/ip6/not-an-ip/tcp/5001",
        "/dns4/user@host/tcp/5001",
        "/tcp/5001",
        "/unix/run/ipfs.sock",
        "/ip4/127.0.0.1/udp/5001",
        "127.0.0.1:5001",
        "http:///api",
        "",
    ],
)
def test_bad_multiaddr_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        api_url_from_multiaddr(text)


# ----------------------------------------------------------------------------------------------- asset


def files_outside(root: Path, dest: Path) -> set[Path]:
    """Every file or link under ``root`` that is not under ``dest``."""
    found = set()
    for path in root.rglob("*"):
        if path.is_relative_to(dest) or (path.is_dir() and not path.is_symlink()):
            continue
        found.add(path)
    return found


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(BLEND_BYTES, id="plain"),
        pytest.param(b"BLENDER_V300" + b"\0" * 64, id="plain-old-header"),
        pytest.param(b"\x28\xb5\x2f\xfd" + b"\0" * 64, id="zstd"),
        pytest.param(gzip.compress(BLEND_BYTES), id="gzip"),
    ],
)
def test_blend_asset_is_renamed_to_dot_blend(tmp_path: Path, head: bytes) -> None:
    asset = tmp_path / "asset"
    asset.write_bytes(head)
    blend = prepare_blend(asset, tmp_path / "scene")
    assert blend == tmp_path / "asset.blend"
    assert blend.read_bytes() == head
    assert not asset.exists()
    assert not (tmp_path / "scene").exists()  # nothing was extracted


def test_blend_asset_already_named_blend_stays(tmp_path: Path) -> None:
    asset = tmp_path / "scene.blend"
    asset.write_bytes(BLEND_BYTES)
    assert prepare_blend(asset, tmp_path / "work") == asset
    assert asset.read_bytes() == BLEND_BYTES


def test_zip_with_nested_blend_is_found(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "asset",
        [
            ("project/", b""),
            ("project/textures/wood.png", b"png"),
            ("project/scenes/shot.blend", BLEND_BYTES),
        ],
    )
    blend = prepare_blend(archive, tmp_path / "scene")
    assert blend == tmp_path / "scene" / "project" / "scenes" / "shot.blend"
    assert blend.read_bytes() == BLEND_BYTES
    assert (tmp_path / "scene" / "project" / "textures" / "wood.png").read_bytes() == b"png"


def test_zip_with_several_blends_picks_the_shallowest(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "asset",
        [
            ("project/linked/a/deep.blend", b"BLENDER-v405deep"),
            ("project/main.blend", b"BLENDER-v405main"),
            ("project/linked/lib.blend", b"BLENDER-v405lib"),
        ],
    )
    blend = prepare_blend(archive, tmp_path / "scene")
    assert blend == tmp_path / "scene" / "project" / "main.blend"
    assert blend.read_bytes() == b"BLENDER-v405main"


@pytest.mark.parametrize("mode", ["w:gz", "w", "w:xz"])
def test_tar_with_nested_blends_picks_the_shallowest(tmp_path: Path, mode: str) -> None:
    archive = make_tar(
        tmp_path / "asset",
        [
            ("render/assets/prop.blend", b"BLENDER-v405prop"),
            ("render/shot.blend", b"BLENDER-v405shot"),
            ("render/notes.txt", b"notes"),
        ],
        mode,
    )
    blend = prepare_blend(archive, tmp_path / "scene")
    assert blend == tmp_path / "scene" / "render" / "shot.blend"
    assert blend.read_bytes() == b"BLENDER-v405shot"
    assert (tmp_path / "scene" / "render" / "assets" / "prop.blend").is_file()


def test_find_blend_without_any_blend_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "scene.blend1").write_bytes(BLEND_BYTES)  # a backup, not a scene
    with pytest.raises(AssetError, match=r"no \.blend"):
        find_blend(tmp_path)


def symlink_zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK, as Info-ZIP stores links
    return info


@pytest.mark.parametrize(
    "member",
    [
        pytest.param("../evil.blend", id="dotdot"),
        pytest.param("project/../../evil.blend", id="dotdot-nested"),
        pytest.param("..\\evil.blend", id="windows-dotdot"),
        pytest.param("ABSOLUTE", id="absolute"),
        pytest.param("C:\\evil.blend", id="windows-drive"),
    ],
)
def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path, member: str) -> None:
    outside = tmp_path / "outside" / "x.blend"
    outside.parent.mkdir()
    name = str(outside) if member == "ABSOLUTE" else member
    archive = make_zip(tmp_path / "asset", [(name, BLEND_BYTES)])
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == [name]  # the hostile name really is in the archive
    dest = tmp_path / "work" / "scene"
    dest.mkdir(parents=True)
    before = files_outside(tmp_path, dest)

    with pytest.raises(AssetError):
        prepare_blend(archive, dest)

    assert not (tmp_path / "work" / "evil.blend").exists()
    assert not (tmp_path / "evil.blend").exists()
    assert not outside.exists()
    assert files_outside(tmp_path, dest) == before
    assert list(dest.rglob("*")) == []


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("operator secret", encoding="utf-8")
    archive = make_zip(
        tmp_path / "asset",
        [(symlink_zip_info("link"), str(secret).encode()), ("link/evil.blend", BLEND_BYTES)],
    )
    dest = tmp_path / "scene"
    with pytest.raises(AssetError, match="link"):
        extract_zip(archive, dest)
    assert not (dest / "link").exists()
    assert not (dest / "link").is_symlink()
    assert secret.read_text(encoding="utf-8") == "operator secret"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_tar_member_escaping_the_folder_is_refused(tmp_path: Path, kind: str) -> None:
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    secret = outside_dir / "secret.txt"
    secret.write_text("operator secret", encoding="utf-8")
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [("ok/readme.txt", b"fine")]
    if kind == "dotdot":
        members.append(("ok/../../outside/evil.blend", BLEND_BYTES))
    elif kind == "absolute":
        members.append((str(outside_dir / "evil.blend"), BLEND_BYTES))
    elif kind == "symlink":
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside_dir)
        members += [link, ("escape/evil.blend", BLEND_BYTES)]
    else:
        link = tarfile.TarInfo("hard.blend")
        link.type = tarfile.LNKTYPE
        link.linkname = str(secret)
        members.append(link)
    archive = make_tar(tmp_path / "asset", members)
    dest = tmp_path / "work" / "scene"
    dest.mkdir(parents=True)
    before = files_outside(tmp_path, dest)

    with pytest.raises(AssetError):
        extract_tar(archive, dest)

    assert not (outside_dir / "evil.blend").exists()
    assert not (tmp_path / "work" / "evil.blend").exists()
    assert secret.read_text(encoding="utf-8") == "operator secret"
    assert files_outside(tmp_path, dest) == before
    assert not any(path.is_symlink() for path in dest.rglob("*"))
    assert not (dest / "hard.blend").exists()


def test_archive_without_blend_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "asset", [("readme.txt", b"no scene here"), ("scene.blend1", BLEND_BYTES)])
    with pytest.raises(AssetError, match=r"no \.blend"):
        prepare_blend(archive, tmp_path / "scene")


def test_png_asset_is_neither_blend_nor_archive(tmp_path: Path) -> None:
    asset = tmp_path / "asset"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(asset, format="PNG")
    with pytest.raises(AssetError, match=r"not a \.blend"):
        prepare_blend(asset, tmp_path / "scene")
    assert asset.is_file()
    assert not (tmp_path / "asset.blend").exists()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"PK\x03\x04" + b"\xff" * 200, id="zip-header-garbage"),
        pytest.param(b"UNKNOWN", id="cut-zip"),
    ],
)
def test_corrupt_zip_is_refused(tmp_path: Path, data: bytes) -> None:
    asset = tmp_path / "asset"
    if data == b"UNKNOWN":  # a real zip, cut in half
        whole = make_zip(tmp_path / "whole.zip", [("scene.blend", BLEND_BYTES * 10)]).read_bytes()
        data = whole[: len(whole) // 2]
    asset.write_bytes(data)
    with pytest.raises(AssetError):
        prepare_blend(asset, tmp_path / "scene")


def test_gzip_that_is_not_a_tar_nor_a_blend_is_refused(tmp_path: Path) -> None:
    asset = tmp_path / "asset"
    asset.write_bytes(gzip.compress(b"just some text, not a scene" * 40))
    with pytest.raises(AssetError):
        prepare_blend(asset, tmp_path / "scene")


# --------------------------------------------------------------------------------------------- journal


def test_journal_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "completed_jobs.json"
    journal = JobJournal(path)
    journal.mark_completed("job-1")
    journal.mark_failed("job-2", "Blender could not open the file")
    journal.record_result("job-3", "QmResult")

    restarted = JobJournal(path)
    assert restarted.completed == ["job-1"]
    assert restarted.failed == {"job-2": "Blender could not open the file"}
    assert restarted.pending_results == {"job-3": "QmResult"}
    assert restarted.is_finished("job-1")
    assert restarted.is_finished("job-2")
    assert not restarted.is_finished("job-3")
    assert not restarted.is_finished("job-4")
    assert restarted.is_completed("job-1")
    assert not restarted.is_completed("job-2")


def test_journal_file_keeps_the_seed_format(tmp_path: Path) -> None:
    path = tmp_path / "completed_jobs.json"
    JobJournal(path).mark_completed("a1b2")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["completed_jobs"] == ["a1b2"]
    assert isinstance(data["completed_jobs"], list)


def test_seed_format_journal_is_read(tmp_path: Path) -> None:
    path = tmp_path / "completed_jobs.json"
    path.write_text(json.dumps({"completed_jobs": [1, 2, 5]}), encoding="utf-8")
    journal = JobJournal(path)
    assert journal.completed == ["1", "2", "5"]
    assert journal.is_finished("5")
    assert not journal.is_finished("3")
    assert journal.failed == {}
    assert journal.pending_results == {}
    journal.mark_completed("7")
    assert json.loads(path.read_text(encoding="utf-8"))["completed_jobs"] == ["1", "2", "5", "7"]


def test_reported_result_leaves_the_pending_list(tmp_path: Path) -> None:
    path = tmp_path / "completed_jobs.json"
    journal = JobJournal(path)
    journal.record_result("job-9", "bafkreiresult")
    assert JobJournal(path).pending_results == {"job-9": "bafkreiresult"}  # on disk before the report
    journal.mark_completed("job-9")
    assert journal.pending_results == {}
    assert JobJournal(path).pending_results == {}
    assert JobJournal(path).completed == ["job-9"]


def test_failed_job_later_completed_is_no_longer_failed(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "completed_jobs.json")
    journal.mark_failed("job-5", "x" * 2000)
    assert len(journal.failed["job-5"]) == 500
    journal.mark_completed("job-5")
    journal.mark_completed("job-5")
    assert journal.failed == {}
    assert journal.completed == ["job-5"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param('{"completed_jobs": ["a", "b"', id="truncated"),
        pytest.param("\x00\x00\x00", id="zeros"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param('["a", "b"]', id="a-list"),
        pytest.param('{"completed_jobs": null}', id="null-list"),
        pytest.param('{"completed_jobs": "abc"}', id="string-list"),
        pytest.param('{"completed_jobs": [], "failed_jobs": ["x"]}', id="failed-not-a-dict"),
    ],
)
def test_corrupt_journal_is_kept_aside_and_a_fresh_one_works(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "completed_jobs.json"
    raw = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(raw)

    journal = JobJournal(path)

    backup = tmp_path / "completed_jobs.corrupt.json"
    assert backup.read_bytes() == raw
    assert journal.completed == []
    journal.mark_completed("job-1")
    assert JobJournal(path).completed == ["job-1"]
    assert backup.read_bytes() == raw


def test_journal_writes_leave_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "completed_jobs.json"
    journal = JobJournal(path)
    for number in range(100):
        journal.record_result(f"job-{number}", f"Qm{number}")
        journal.mark_completed(f"job-{number}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["completed_jobs.json"]
    assert len(JobJournal(path).completed) == 100


def test_concurrent_marks_lose_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "completed_jobs.json"
    journal = JobJournal(path)
    start = threading.Barrier(8)

    def mark(thread: int) -> None:
        start.wait()
        for number in range(25):
            journal.mark_completed(f"t{thread}-{number}")

    threads = [threading.Thread(target=mark, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = {f"t{t}-{n}" for t in range(8) for n in range(25)}
    assert set(journal.completed) == expected
    on_disk = JobJournal(path).completed
    assert len(on_disk) == 200
    assert set(on_disk) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["completed_jobs.json"]


# ---------------------------------------------------------------------------------------- job settings


@pytest.mark.parametrize("text", [None, "", "   ", "[]", "[1, 2]", "42", '"CYCLES"', "null"])
def test_no_settings_gives_the_defaults(text: str | None) -> None:
    assert parse_render_settings(text) == RenderSettings(
        engine="EEVEE", frame=1, resolution_percentage=None, samples=None
    )


@pytest.mark.parametrize(
    ("engine", "family"),
    [
        ("eevee", "EEVEE"),
        ("BLENDER_EEVEE", "EEVEE"),
        ("BLENDER_EEVEE_NEXT", "EEVEE"),
        ("CYCLES", "CYCLES"),
        ("cycles", "CYCLES"),
        ("workbench", "WORKBENCH"),
        ("BLENDER_WORKBENCH", "WORKBENCH"),
    ],
)
def test_engine_aliases_map_to_the_family(engine: str, family: str) -> None:
    assert parse_render_settings(json.dumps({"engine": engine})).engine == family


def test_full_settings_are_read_and_unknown_keys_ignored() -> None:
    settings = parse_render_settings(
        json.dumps(
            {
                "engine": "CYCLES",
                "frame": 42,
                "resolution_percentage": 50,
                "samples": 128,
                "gpu": "required",
                "min_vram_gb": 8,
            }
        )
    )
    assert settings == RenderSettings(engine="CYCLES", frame=42, resolution_percentage=50, samples=128)
    assert settings.to_json() == {
        "engine": "CYCLES",
        "frame": 42,
        "resolution_percentage": 50,
        "samples": 128,
        "blender_version": None,
        "device": "any",
        "min_gpu_memory_gb": None,
    }


@pytest.mark.parametrize(("value", "read"), [("4.5", "4.5"), (" 5.0 ", "5.0"), (4.2, "4.2"), (5, None)])
def test_blender_version_names_a_release(value: object, read: str | None) -> None:
    """A job may ask for a Blender release, as a string or the number JSON writers make of it."""
    if read is None:
        with pytest.raises(JobSettingsError, match=r'^blender_version must name a release such as "4.5"'):
            parse_render_settings(json.dumps({"blender_version": value}))
    else:
        assert parse_render_settings(json.dumps({"blender_version": value})).blender_version == read
    for wrong in ("latest", "4", "4.5.1", True, [4, 5]):
        with pytest.raises(JobSettingsError, match=r"^blender_version"):
            parse_render_settings(json.dumps({"blender_version": wrong}))


@pytest.mark.parametrize(
    ("key", "value"),
    [(key, value) for key in ("frame", "resolution_percentage", "samples") for value in (True, 2.0, "10")]
    + [
        ("frame", MAX_FRAME + 1),
        ("frame", -MAX_FRAME - 1),
        ("resolution_percentage", 0),
        ("resolution_percentage", 101),
        ("samples", 0),
        ("samples", MAX_SAMPLES + 1),
        ("samples", -5),
    ],
)
def test_bad_setting_names_its_key(key: str, value: object) -> None:
    with pytest.raises(JobSettingsError) as caught:
        parse_render_settings(json.dumps({key: value}))
    assert str(caught.value).startswith(key)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("frame", MAX_FRAME),
        ("frame", -MAX_FRAME),
        ("frame", 0),
        ("resolution_percentage", 1),
        ("resolution_percentage", 100),
        ("samples", 1),
        ("samples", MAX_SAMPLES),
    ],
)
def test_settings_at_the_bounds_are_accepted(key: str, value: int) -> None:
    assert getattr(parse_render_settings(json.dumps({key: value})), key) == value


@pytest.mark.parametrize("engine", ["OCTANE", 3, ["CYCLES"]])
def test_unsupported_engine_is_refused(engine: object) -> None:
    with pytest.raises(JobSettingsError, match="engine"):
        parse_render_settings(json.dumps({"engine": engine}))


@pytest.mark.parametrize("engine", ["", None])
def test_empty_engine_keeps_the_default(engine: object) -> None:
    """Like the other keys, a null or empty value means "not asked for": render with EEVEE."""
    assert parse_render_settings(json.dumps({"engine": engine})).engine == "EEVEE"


@pytest.mark.parametrize("text", ["{", "{'engine': 'CYCLES'}", "engine=CYCLES"])
def test_invalid_json_settings_are_refused(text: str) -> None:
    with pytest.raises(JobSettingsError, match="not valid JSON"):
        parse_render_settings(text)


# ------------------------------------------------------------------------------------------------- api

CID_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
CID_V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


@pytest.mark.parametrize("cid", [CID_V0, CID_V1])
def test_split_cid_fits_two_felt_strings(cid: str) -> None:
    part1, part2 = split_cid(cid)
    assert len(part1) == FELT_STRING_LIMIT == 31
    assert part2 is not None
    assert len(part2) <= 31
    assert part1 + part2 == cid


def test_cid_lengths_are_the_real_ones() -> None:
    assert (len(CID_V0), len(CID_V1)) == (46, 59)


@pytest.mark.parametrize("cid", ["Qm" + "a" * 29, "short"])
def test_split_cid_needs_no_second_part_for_short_ids(cid: str) -> None:
    assert split_cid(cid) == (cid, None)


def test_job_from_response_prefers_the_full_cid() -> None:
    part1, part2 = split_cid(CID_V1)
    body = {
        "id": "8a2d6a0e-3d7e-4f0b-9c59-2f1f5b7f9a11",
        "full_asset_cid": CID_V0,
        "asset_cid_part1": part1,
        "asset_cid_part2": part2,
        "reward_amount": 1000,
        "status": "OPEN",
        "required_capabilities": '{"engine": "CYCLES"}',
    }
    job = Job.from_response(body)
    assert job.id == body["id"]
    assert job.asset_cid == CID_V0
    assert job.reward == 1000
    assert job.status == "OPEN"
    assert job.required_capabilities == '{"engine": "CYCLES"}'


@pytest.mark.parametrize("cid", [CID_V0, CID_V1, "Qm" + "b" * 29])
def test_job_from_response_joins_the_parts(cid: str) -> None:
    part1, part2 = split_cid(cid)
    job = Job.from_response(
        {"id": "job-1", "full_asset_cid": None, "asset_cid_part1": part1, "asset_cid_part2": part2}
    )
    assert job.asset_cid == cid
    assert job.reward == 0
    assert job.required_capabilities is None


@pytest.mark.parametrize("body", [{"full_asset_cid": CID_V0}, {"id": 7, "full_asset_cid": CID_V0}, []])
def test_job_without_a_string_id_is_a_backend_error(body: object) -> None:
    with pytest.raises(BackendError):
        Job.from_response(body)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- render


def test_png_size_reads_a_real_png(tmp_path: Path) -> None:
    path = tmp_path / "render0001.png"
    Image.new("RGBA", (64, 48), (0, 128, 255, 255)).save(path, format="PNG")
    assert png_size(path) == (64, 48)


@pytest.mark.parametrize("kind", ["jpeg", "empty", "short-png", "blend"])
def test_png_size_refuses_what_is_not_a_png(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "render0001.png"
    if kind == "jpeg":
        Image.new("RGB", (64, 48)).save(path, format="JPEG")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "short-png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    else:
        path.write_bytes(BLEND_BYTES)
    with pytest.raises(RenderError, match="not a PNG"):
        png_size(path)


SECRETS = {
    "WORKER_PRIVATE_KEY": PRIVATE_KEY_HEX,
    "VERIFRAME_TOKEN": "eyJhbGciOiJIUzI1NiJ9.secret-token",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value-123",
    "BACKEND_API_URL": "http://127.0.0.1:8000/api/v1",
    "SSH_AUTH_SOCK": "/run/user/1000/ssh-agent.socket",
}


@pytest.fixture
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("MESA_GL_VERSION_OVERRIDE", "4.5")
    monkeypatch.setenv("HOME", "/home/operator")
    monkeypatch.setenv("TMPDIR", "/tmp/operator")


@pytest.mark.usefixtures("secret_environment")
def test_child_environment_carries_no_secrets(tmp_path: Path) -> None:
    job_dir = tmp_path / "jobs" / "job-1"
    env = child_environment(job_dir)

    for name in SECRETS:
        assert name not in env
    for value in SECRETS.values():
        assert all(value not in v for v in env.values())
    own = {
        "HOME",
        "USERPROFILE",
        "TMPDIR",
        "TEMP",
        "TMP",
        "BLENDER_USER_RESOURCES",
        "BLENDER_USER_CONFIG",
        "BLENDER_USER_SCRIPTS",
        "BLENDER_USER_DATAFILES",
        "BLENDER_USER_EXTENSIONS",
        "PYTHONNOUSERSITE",
        "PYTHONUNBUFFERED",
    }
    for name in env:
        assert name in ENV_ALLOWLIST or name.startswith(ENV_PREFIX_ALLOWLIST) or name in own, name
    assert env["CUDA_VISIBLE_DEVICES"] == "0"  # the GPU selection does reach Blender
    assert env["MESA_GL_VERSION_OVERRIDE"] == "4.5"


@pytest.mark.usefixtures("secret_environment")
def test_child_environment_drops_what_could_load_code_into_blender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables that would make the render Blender import or run code from elsewhere never reach it."""
    for name in (
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "BLENDER_SYSTEM_SCRIPTS",
        "BLENDER_SYSTEM_PYTHON",
    ):
        monkeypatch.setenv(name, str(tmp_path / "elsewhere"))
    cache = tmp_path / "cache"
    env = child_environment(tmp_path / "jobs" / "job-1", cache)
    assert not {
        k for k in env if k.startswith(("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "BLENDER_SYSTEM"))
    }
    # All shader caches (Mesa's, NVIDIA's, Blender's own under XDG) share one folder that outlives jobs.
    assert env["MESA_SHADER_CACHE_DIR"] == str(cache / "mesa")
    assert env["__GL_SHADER_DISK_CACHE_PATH"] == str(cache / "nvidia")
    assert env["XDG_CACHE_HOME"] == str(cache)


@pytest.mark.usefixtures("secret_environment")
def test_child_home_and_temp_are_inside_the_job_folder(tmp_path: Path) -> None:
    job_dir = tmp_path / "jobs" / "job-1"
    env = child_environment(job_dir)
    for name in (
        "HOME",
        "USERPROFILE",
        "TMPDIR",
        "TEMP",
        "TMP",
        "BLENDER_USER_CONFIG",
        "BLENDER_USER_SCRIPTS",
    ):
        assert Path(env[name]).is_relative_to(job_dir), name
    assert Path(env["HOME"]).is_dir()
    assert Path(env["TMPDIR"]).is_dir()
    assert env["PYTHONNOUSERSITE"] == "1"


@pytest.mark.usefixtures("secret_environment")
def test_blender_binary_argv_is_locked_down(tmp_path: Path) -> None:
    blend = tmp_path / "scene" / "shot.blend"
    spec = tmp_path / "render_spec.json"
    argv = BlenderCommand("/opt/blender/blender", uses_bpy_module=False).argv(blend, spec)

    assert argv[0] == "/opt/blender/blender"
    assert "-b" in argv
    assert "--factory-startup" in argv
    assert "--disable-autoexec" in argv
    assert "--offline-mode" in argv  # nothing in the scene may reach the network
    # The file's own scripts must be disabled before Blender opens it, and the spec must follow "--"
    # so Blender hands it to the child script instead of reading it as a file to open.
    assert argv.index("--disable-autoexec") < argv.index(str(blend))
    assert argv.index(str(blend)) < argv.index("--python")
    assert argv[argv.index("--python") + 1] == str(CHILD_SCRIPT)
    assert argv[-2:] == ["--", str(spec)]
    joined = " ".join(argv)
    for value in SECRETS.values():
        assert value not in joined


def test_bpy_module_argv_runs_the_child_script(tmp_path: Path) -> None:
    spec = tmp_path / "render_spec.json"
    argv = BlenderCommand("/usr/bin/python3", uses_bpy_module=True).argv(tmp_path / "shot.blend", spec)
    # -I (isolated): no PYTHON* variables, no user site-packages, no job folder on sys.path.
    assert argv == ["/usr/bin/python3", "-I", str(CHILD_SCRIPT), str(spec)]
    assert CHILD_SCRIPT.is_file()
