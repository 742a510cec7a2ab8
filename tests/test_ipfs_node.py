"""The devnet IPFS node over real HTTP: Kubo's CIDs from ``add``, identical bytes from ``cat`` and the
gateway, Kubo-like errors, and blocks that outlive the process that wrote them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from multiformats import CID

from devnet.ipfs_node import BlockNotFound, BlockStore, create_gateway_app, create_rpc_app
from tests.servers import serve_app
from veriframe_addon.worker.errors import IpfsError
from veriframe_addon.worker.ipfs.cid import (
    DagPbNode,
    UnixfsData,
    UnixfsFileBuilder,
    UnixfsType,
    encode_dag_pb,
    encode_unixfs,
)

TIMEOUT = 10
UNKNOWN_CID = "QmZYM2fbUWFWcj9chEqHbCDx6Vo7jacNoZxPRCUvz1ca8e"  # sha256 of b"veriframe: never added"


def veriframe_stream(size: int) -> bytes:
    """The vector stream of test_cid: sha256(b"veriframe:0") + sha256(b"veriframe:1") + ..., cut."""
    digests = (hashlib.sha256(f"veriframe:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(digests)[:size]


BIG = veriframe_stream(1048583)  # five chunks: a two-level DAG

# (content, cid-version, CID and Size printed by Kubo's `ipfs add`)
KUBO_ADDS = [
    pytest.param(b"", 0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", 6, id="empty-v0"),
    pytest.param(b"hello world\n", 0, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", 20, id="hello-v0"),
    pytest.param(veriframe_stream(1), 0, "QmVJwBx4uNsa7jYvocbofDkakqztS9BmYA3QoNkb881tka", 9, id="1-v0"),
    pytest.param(
        veriframe_stream(262145), 0, "QmXXVLzzscYckyaFknmSFU7NjyzUVnYfTi4dVFz7gcu6Ak", 262267, id="262145-v0"
    ),
    pytest.param(
        veriframe_stream(262145),
        1,
        "bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e",
        262249,
        id="262145-v1",
    ),
    pytest.param(BIG, 0, "QmYK1KwuL7r6Qn9rKpF6pUnmkFuCu97NCpQvpFYPQrpqLA", 1048891, id="1048583-v0"),
    pytest.param(
        BIG, 1, "bafybeidkmazc6wjmauavuej2tvxc7st4yksh5kyt7jsfximbzzcu2ky6iy", 1048837, id="1048583-v1"
    ),
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ipfs")


@pytest.fixture(scope="module")
def store(store_dir: Path) -> BlockStore:
    return BlockStore(store_dir)


@pytest.fixture(scope="module")
def rpc(store: BlockStore) -> Iterator[str]:
    with serve_app(create_rpc_app(store)) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(store: BlockStore) -> Iterator[str]:
    with serve_app(create_gateway_app(store)) as url:
        yield url


def add(rpc: str, data: bytes, name: str = "frame.bin", **params: object) -> dict[str, str]:
    response = requests.post(
        f"{rpc}/api/v0/add", params=params, files={"file": (name, data)}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def big_cid(rpc: str) -> str:
    return add(rpc, BIG, **{"cid-version": 0, "pin": "true", "quiet": "true"})["Hash"]


# --- add --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "version", "expected", "size"), KUBO_ADDS)
def test_add_answers_like_kubo(rpc: str, data: bytes, version: int, expected: str, size: int):
    params = {"cid-version": version} if version else {}
    assert add(rpc, data, **params) == {"Name": "frame.bin", "Hash": expected, "Size": str(size)}


def test_add_honours_raw_leaves(rpc: str):
    data = veriframe_stream(262145)
    builder = UnixfsFileBuilder(1, raw_leaves=False)
    builder.update(data)
    expected = builder.finish()
    answer = add(rpc, data, **{"cid-version": 1, "raw-leaves": "false", "progress": "false"})
    assert answer["Hash"] == str(expected)
    assert answer["Size"] == str(builder.dag_size)


def test_add_refuses_bad_requests(rpc: str):
    missing = requests.post(f"{rpc}/api/v0/add", data={"note": "no file"}, timeout=TIMEOUT)
    assert missing.status_code == 400
    assert missing.json()["Type"] == "error"
    assert missing.json()["Code"] == 1
    bad_version = requests.post(
        f"{rpc}/api/v0/add", params={"cid-version": 7}, files={"file": ("x", b"x")}, timeout=TIMEOUT
    )
    assert bad_version.status_code == 400


# --- cat and gateway --------------------------------------------------------------------------------


def test_cat_and_gateway_return_the_same_bytes(rpc: str, gateway: str, big_cid: str):
    with requests.post(f"{rpc}/api/v0/cat", params={"arg": big_cid}, stream=True, timeout=TIMEOUT) as cat:
        assert cat.status_code == 200
        assert cat.headers["X-Content-Length"] == str(len(BIG))
        via_cat = b"".join(cat.iter_content(65536))
    with requests.get(f"{gateway}/ipfs/{big_cid}", stream=True, timeout=TIMEOUT) as got:
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert got.headers["Content-Length"] == str(len(BIG))
        assert got.headers["X-Ipfs-Path"] == f"/ipfs/{big_cid}"
        assert got.headers["Etag"] == f'"{big_cid}"'
        via_gateway = b"".join(got.iter_content(65536))
    assert via_cat == via_gateway == BIG


def test_cat_of_raw_leaf_dag_and_ipfs_path_arg(rpc: str):
    cid = add(rpc, BIG, **{"cid-version": 1})["Hash"]
    cat = requests.post(f"{rpc}/api/v0/cat", params={"arg": f"/ipfs/{cid}"}, timeout=TIMEOUT)
    assert cat.status_code == 200
    assert cat.content == BIG


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 10), (262140, 10), (262144, 262144), (1048580, None), (1048583, None), (5, 0), (2_000_000, 5)],
)
def test_cat_offset_and_length(rpc: str, big_cid: str, offset: int, length: int | None):
    params: dict[str, object] = {"arg": big_cid, "offset": offset}
    if length is not None:
        params["length"] = length
    cat = requests.post(f"{rpc}/api/v0/cat", params=params, timeout=TIMEOUT)
    assert cat.status_code == 200
    end = None if length is None else offset + length
    assert cat.content == BIG[offset:end]


def test_gateway_head(gateway: str, big_cid: str):
    head = requests.head(f"{gateway}/ipfs/{big_cid}", timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(BIG))
    assert head.headers["Etag"] == f'"{big_cid}"'
    assert head.content == b""


def test_unknown_and_invalid_cids(rpc: str, gateway: str):
    for arg in (UNKNOWN_CID, "not-a-cid", f"/ipfs/{UNKNOWN_CID}"):
        answer = requests.post(f"{rpc}/api/v0/cat", params={"arg": arg}, timeout=TIMEOUT)
        assert answer.status_code == 500
        body = answer.json()
        assert body["Type"] == "error"
        assert body["Code"] == 0
        assert body["Message"]
    assert requests.get(f"{gateway}/ipfs/{UNKNOWN_CID}", timeout=TIMEOUT).status_code == 404
    assert requests.head(f"{gateway}/ipfs/{UNKNOWN_CID}", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{gateway}/ipfs/not-a-cid", timeout=TIMEOUT).status_code == 400


def test_directories_are_not_served(rpc: str, gateway: str, store: BlockStore):
    block = encode_dag_pb(DagPbNode(data=encode_unixfs(UnixfsData(UnixfsType.DIRECTORY))))
    directory = CID("base58btc", 0, "dag-pb", ("sha2-256", hashlib.sha256(block).digest()))
    store.put(directory, block)
    assert (
        requests.post(f"{rpc}/api/v0/cat", params={"arg": str(directory)}, timeout=TIMEOUT).status_code == 500
    )
    assert requests.get(f"{gateway}/ipfs/{directory}", timeout=TIMEOUT).status_code == 501


# --- RPC surface ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["add", "cat", "version", "id"])
def test_rpc_refuses_get_like_kubo(rpc: str, endpoint: str):
    assert requests.get(f"{rpc}/api/v0/{endpoint}", timeout=TIMEOUT).status_code == 405


def test_version_and_id(rpc: str):
    version = requests.post(f"{rpc}/api/v0/version", timeout=TIMEOUT)
    assert version.status_code == 200
    assert version.json()["Version"].startswith("devnet-")
    ident = requests.post(f"{rpc}/api/v0/id", timeout=TIMEOUT)
    assert ident.status_code == 200
    assert ident.json()["ID"]


# --- the store itself -------------------------------------------------------------------------------


def test_blocks_persist_on_disk(store_dir: Path, big_cid: str, gateway: str):
    reopened = BlockStore(store_dir)
    root = CID.decode(big_cid)
    assert (store_dir / "blocks" / big_cid).is_file()
    assert reopened.has(root)
    assert reopened.file_size(root) == len(BIG)
    assert b"".join(reopened.iter_file(root)) == BIG
    with serve_app(create_gateway_app(reopened)) as second:
        assert requests.get(f"{second}/ipfs/{big_cid}", timeout=TIMEOUT).content == BIG


def test_store_put_get_and_aliases(tmp_path: Path):
    store = BlockStore(tmp_path)
    with open(tmp_path / "frame.bin", "wb") as file:
        file.write(BIG)
    with open(tmp_path / "frame.bin", "rb") as file:
        root, file_size, dag_size = store.add_stream(file)
    assert (str(root), file_size, dag_size) == (
        "QmYK1KwuL7r6Qn9rKpF6pUnmkFuCu97NCpQvpFYPQrpqLA",
        len(BIG),
        1048891,
    )
    assert not list((tmp_path / "blocks").glob(".tmp-*"))
    twin = CID("base32", 1, "dag-pb", root.digest)  # Kubo keys blocks by multihash: the v1 form works too
    assert store.get(twin) == store.get(root)
    assert b"".join(store.iter_file(twin, offset=1048580)) == BIG[1048580:]
    unknown = CID.decode(UNKNOWN_CID)
    assert not store.has(unknown)
    with pytest.raises(BlockNotFound):
        store.get(unknown)
    with pytest.raises(KeyError):
        list(store.iter_file(unknown))
    with pytest.raises(IpfsError):
        store.put(unknown, b"not its content")
