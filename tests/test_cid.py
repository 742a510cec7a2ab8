"""Kubo-compatible CIDs: known ``ipfs add`` vectors, streaming, verification, parsing, DAG shape."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from multiformats import CID, multihash

from veriframe_addon.worker.errors import ContentMismatch, InvalidCid, IpfsError
from veriframe_addon.worker.ipfs.cid import (
    CHUNK_SIZE,
    CidVerifier,
    DagPbLink,
    DagPbNode,
    UnixfsData,
    UnixfsFileBuilder,
    UnixfsType,
    cid_of_file,
    decode_dag_pb,
    decode_unixfs,
    encode_dag_pb,
    encode_unixfs,
    parse_cid,
)


def veriframe_stream(size: int) -> bytes:
    """The vector stream: sha256(b"veriframe:0") + sha256(b"veriframe:1") + ..., cut to ``size`` bytes."""
    digests = (hashlib.sha256(f"veriframe:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(digests)[:size]


# (content, cid_version, CID printed by Kubo's `ipfs add [--cid-version=1]`)
KUBO_VECTORS = [
    pytest.param(b"", 0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", id="empty-v0"),
    pytest.param(b"hello world\n", 0, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", id="hello-v0"),
    pytest.param(veriframe_stream(1), 0, "QmVJwBx4uNsa7jYvocbofDkakqztS9BmYA3QoNkb881tka", id="1-v0"),
    pytest.param(
        veriframe_stream(262145), 0, "QmXXVLzzscYckyaFknmSFU7NjyzUVnYfTi4dVFz7gcu6Ak", id="262145-v0"
    ),
    pytest.param(
        veriframe_stream(262145),
        1,
        "bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e",
        id="262145-v1",
    ),
    pytest.param(
        veriframe_stream(1048583), 0, "QmYK1KwuL7r6Qn9rKpF6pUnmkFuCu97NCpQvpFYPQrpqLA", id="1048583-v0"
    ),
    pytest.param(
        veriframe_stream(1048583),
        1,
        "bafybeidkmazc6wjmauavuej2tvxc7st4yksh5kyt7jsfximbzzcu2ky6iy",
        id="1048583-v1",
    ),
]


def feed(sink: UnixfsFileBuilder | CidVerifier, data: bytes, piece: int | None) -> None:
    view = memoryview(data)
    step = piece or max(len(data), 1)
    for start in range(0, len(data), step):
        sink.update(view[start : start + step])


def build(data: bytes, cid_version: int = 0, piece: int | None = None, **options: object) -> CID:
    builder = UnixfsFileBuilder(cid_version, **options)  # type: ignore[arg-type]
    feed(builder, data, piece)
    return builder.finish()


def _vectors_by_piece() -> list[object]:
    """Every vector fed whole and in 7-byte and 300000-byte pieces; in 1-byte pieces up to 2 chunks
    (over a MiB that only costs time: 7-byte pieces already straddle every chunk boundary)."""
    cases = []
    for vector in KUBO_VECTORS:
        data, version, expected = vector.values
        for piece in (None, 1, 7, 300000):
            if piece == 1 and len(data) > 2 * CHUNK_SIZE:
                continue
            cases.append(pytest.param(data, version, expected, piece, id=f"{vector.id}-{piece or 'whole'}"))
    return cases


@pytest.mark.parametrize(("data", "version", "expected", "piece"), _vectors_by_piece())
def test_kubo_vectors_whatever_the_piece_size(data: bytes, version: int, expected: str, piece: int | None):
    assert str(build(data, version, piece)) == expected


def test_kubo_sizes_and_blocks_hash_to_their_cids():
    """``dag_size`` is Kubo's ``Size`` (root Tsize); every block handed to the sink hashes to its CID."""
    blocks: dict[CID, bytes] = {}
    builder = UnixfsFileBuilder(0, block_sink=lambda cid, block: blocks.setdefault(cid, block))
    builder.update(veriframe_stream(1048583))
    root = builder.finish()
    assert builder.file_size == 1048583
    assert builder.dag_size == len(blocks[root]) + sum(
        link.tsize or 0 for link in decode_dag_pb(blocks[root]).links
    )
    assert builder.dag_size == 1048891
    for cid, block in blocks.items():
        assert multihash.wrap(hashlib.sha256(block).digest(), "sha2-256") == cid.digest


def test_empty_file_v1_is_the_empty_raw_block():
    assert str(build(b"", 1)) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_single_chunk_v1_is_the_raw_leaf():
    data = veriframe_stream(CHUNK_SIZE)
    cid = build(data, 1)
    assert cid.codec.name == "raw"
    assert cid.raw_digest == hashlib.sha256(data).digest()


def test_kubo_encoding_details():
    """What the vectors pin down: links carry an explicit empty Name (12 00); the empty file's leaf has
    no UnixFS Data field at all (08 02 18 00), while any other leaf has one."""
    blocks: dict[CID, bytes] = {}
    builder = UnixfsFileBuilder(0, block_sink=lambda cid, block: blocks.setdefault(cid, block))
    builder.update(veriframe_stream(262145))
    root = builder.finish()
    assert str(root) == "QmXXVLzzscYckyaFknmSFU7NjyzUVnYfTi4dVFz7gcu6Ak"
    node = decode_dag_pb(blocks[root])
    assert [link.name for link in node.links] == ["", ""]
    assert all(link.tsize is not None for link in node.links)
    assert decode_unixfs(node.data or b"") == UnixfsData(UnixfsType.FILE, None, 262145, [262144, 1])

    empty: dict[CID, bytes] = {}
    builder = UnixfsFileBuilder(0, block_sink=lambda cid, block: empty.setdefault(cid, block))
    root = builder.finish()
    assert empty[root] == bytes.fromhex("0a0408021800")
    assert builder.dag_size == 6


def test_cid_of_file(tmp_path: Path):
    path = tmp_path / "frame.bin"
    path.write_bytes(veriframe_stream(1048583))
    assert str(cid_of_file(path)) == "QmYK1KwuL7r6Qn9rKpF6pUnmkFuCu97NCpQvpFYPQrpqLA"
    assert str(cid_of_file(path, 1)) == "bafybeidkmazc6wjmauavuej2tvxc7st4yksh5kyt7jsfximbzzcu2ky6iy"


def test_builder_is_single_use():
    builder = UnixfsFileBuilder()
    with pytest.raises(RuntimeError):
        _ = builder.dag_size
    builder.update(b"x")
    builder.finish()
    with pytest.raises(RuntimeError):
        builder.finish()
    with pytest.raises(RuntimeError):
        builder.update(b"y")


# --- verification -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "version", "expected"), KUBO_VECTORS)
def test_verifier_accepts_the_right_bytes(data: bytes, version: int, expected: str):
    verifier = CidVerifier(expected, source="test")
    feed(verifier, data, 65536)
    assert str(verifier.verify()) == expected
    assert verifier.file_size == len(data)


def test_verifier_accepts_a_cid_object_and_another_base():
    expected = CID.decode("bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e")
    for written in (expected, expected.set(base="base58btc").encode()):
        verifier = CidVerifier(written)
        verifier.update(veriframe_stream(262145))
        assert verifier.verify() == expected


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("damage", ["flip-first", "flip-last", "truncate", "append"])
def test_verifier_refuses_damaged_bytes(version: int, damage: str):
    data = veriframe_stream(1048583)
    expected = str(build(data, version))
    bad = bytearray(data)
    if damage == "flip-first":
        bad[0] ^= 1
    elif damage == "flip-last":
        bad[-1] ^= 0x80
    elif damage == "truncate":
        del bad[-1]
    else:
        bad += b"\0"
    verifier = CidVerifier(expected, source="gateway")
    feed(verifier, bytes(bad), 300000)
    with pytest.raises(ContentMismatch) as caught:
        verifier.verify()
    assert caught.value.expected == expected
    assert caught.value.actual != expected
    assert caught.value.source == "gateway"
    assert "gateway" in str(caught.value)


def test_verifier_for_v1_without_raw_leaves():
    data = veriframe_stream(262145)
    expected = build(data, 1, raw_leaves=False)
    assert str(expected) != "bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e"
    verifier = CidVerifier(expected, raw_leaves=False)
    verifier.update(data)
    assert verifier.verify() == expected


# --- parsing ----------------------------------------------------------------------------------------


def _cid_with(codec: str, hashfun: str, version: int = 1) -> str:
    digest = hashlib.sha3_256(b"x").digest() if hashfun == "sha3-256" else hashlib.sha256(b"x").digest()
    return str(CID("base32", version, codec, multihash.wrap(digest, hashfun)))


@pytest.mark.parametrize(
    "text",
    [
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        "bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46e",
        "  bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku\n",
        "zb2rhZhfZ71VE6u6BX78cmaNKsLmDde9EYyrY9dsRVLJWr9oW",
    ],
)
def test_parse_cid_accepts_verifiable_cids(text: str):
    assert parse_cid(text).hashfun.name == "sha2-256"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "Qm123",
        "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5O0",
        "bafy!!!",
        "bafybeickf6wnvj7uv4b5lhecitbciw2cjnwlnwdvhtqfvr2upycxedm46",
        _cid_with("dag-cbor", "sha2-256"),
        _cid_with("dag-json", "sha2-256"),
        _cid_with("raw", "sha3-256"),
        _cid_with("dag-pb", "sha3-256"),
    ],
)
def test_parse_cid_rejects_what_it_cannot_verify(text: str):
    with pytest.raises(InvalidCid):
        parse_cid(text)
    with pytest.raises(InvalidCid):
        CidVerifier(text)


def test_invalid_cid_is_a_value_error():
    with pytest.raises(ValueError):
        parse_cid("nope")


# --- dag-pb / UnixFS codec --------------------------------------------------------------------------


def test_dag_pb_round_trips_kubo_blocks():
    blocks: dict[CID, bytes] = {}
    for version in (0, 1):
        builder = UnixfsFileBuilder(version, block_sink=lambda cid, block: blocks.setdefault(cid, block))
        builder.update(veriframe_stream(1048583))
        builder.finish()
    dag_pb_blocks = [block for cid, block in blocks.items() if cid.codec.name == "dag-pb"]
    assert len(dag_pb_blocks) == 5 + 1 + 1  # v0: 5 leaves + root; v1: root over raw leaves
    for block in dag_pb_blocks:
        node = decode_dag_pb(block)
        assert encode_dag_pb(node) == block
        assert encode_unixfs(decode_unixfs(node.data or b"")) == node.data


def test_dag_pb_round_trips_absent_and_empty_fields():
    child = CID.decode("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
    for node in (
        DagPbNode(),
        DagPbNode(data=b""),
        DagPbNode(links=[DagPbLink(child, None, None)]),
        DagPbNode(links=[DagPbLink(child, "name ü", 7), DagPbLink(child, "", 0)], data=b"\x08\x01"),
    ):
        assert decode_dag_pb(encode_dag_pb(node)) == node
    for message in (UnixfsData(UnixfsType.FILE), UnixfsData(UnixfsType.RAW, b"", 0, [1, 2**40])):
        assert decode_unixfs(encode_unixfs(message)) == message


@pytest.mark.parametrize("block", [b"\x0a", b"\x0a\x05ab", b"\x12\x02\x18\x01", b"\xff", b"\x1a\x00"])
def test_decode_dag_pb_refuses_garbage(block: bytes):
    with pytest.raises(IpfsError):
        decode_dag_pb(block)


# --- DAG shape beyond one level ---------------------------------------------------------------------


def _collect(version: int, n_bytes: int, chunk_size: int = CHUNK_SIZE, max_links: int = 174):
    """Build a DAG keeping internal blocks and the leaf CIDs in the order they were produced."""
    internal: dict[CID, bytes] = {}
    leaves: list[CID] = []

    def sink(cid: CID, block: bytes) -> None:
        if cid.codec.name == "raw" or not block.startswith(b"\x12"):  # dag-pb writes Links (2) first
            leaves.append(cid)
        else:
            internal[cid] = block

    builder = UnixfsFileBuilder(version, chunk_size=chunk_size, max_links=max_links, block_sink=sink)
    zeros = bytes(1 << 22)
    left = n_bytes
    while left:
        builder.update(zeros[: min(left, len(zeros))])
        left -= min(left, len(zeros))
    root = builder.finish()
    return root, builder, internal, leaves


def _shape(cid: CID, internal: dict[CID, bytes]) -> object:
    if cid not in internal:
        return "L"
    return [_shape(link.cid, internal) for link in decode_dag_pb(internal[cid]).links]


def _leaf_order(cid: CID, internal: dict[CID, bytes]) -> list[CID]:
    if cid not in internal:
        return [cid]
    return [leaf for link in decode_dag_pb(internal[cid]).links for leaf in _leaf_order(link.cid, internal)]


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("chunks", [174, 175, 174 * 2 + 1])
def test_shape_beyond_174_chunks(version: int, chunks: int):
    """No Kubo vector exists for files over 174 chunks (45 MiB), so this checks the structure Kubo's
    balanced layout prescribes: all leaves at one depth, nodes filled left to right with 174 links,
    the short last group on every level still its own node, Tsize/blocksizes consistent."""
    size = (chunks - 1) * CHUNK_SIZE + 1000
    root, builder, internal, leaves = _collect(version, size)
    assert len(leaves) == chunks
    assert _leaf_order(root, internal) == leaves
    root_node = decode_dag_pb(internal[root])
    root_meta = decode_unixfs(root_node.data or b"")
    assert root_meta.filesize == size
    if chunks == 174:  # depth 1: the root links the leaves
        assert _shape(root, internal) == ["L"] * 174
        assert root_meta.blocksizes == [CHUNK_SIZE] * 173 + [1000]
    else:  # depth 2: the first child of the root covers exactly 174 leaves
        groups = [174] * (chunks // 174) + [chunks % 174]
        assert _shape(root, internal) == [["L"] * n for n in groups]
        assert root_meta.blocksizes == [174 * CHUNK_SIZE] * (chunks // 174) + [
            (chunks % 174 - 1) * CHUNK_SIZE + 1000
        ]
        first = decode_unixfs(decode_dag_pb(internal[root_node.links[0].cid]).data or b"")
        assert first.filesize == 174 * CHUNK_SIZE
        assert first.blocksizes == [CHUNK_SIZE] * 174
    for cid, block in internal.items():  # Tsize = the child's block + everything below it
        node = decode_dag_pb(block)
        for link in node.links:
            if link.cid in internal:
                below = decode_dag_pb(internal[link.cid]).links
                assert link.tsize == len(internal[link.cid]) + sum(c.tsize or 0 for c in below)
        assert cid.version == version
    assert builder.dag_size == len(internal[root]) + sum(link.tsize or 0 for link in root_node.links)
    assert builder.file_size == size


def kubo_balanced_shape(leaves: int, max_links: int) -> object:
    """Kubo's balanced.Layout, top-down, transcribed: the old root becomes the first child of a new,
    deeper root, which ``fillNodeRec`` then fills with full subtrees of the level below."""
    left = leaves

    def leaf() -> str:
        nonlocal left
        left -= 1
        return "L"

    def fill(node: list[object], depth: int) -> None:
        while len(node) < max_links and left:
            if depth == 1:
                node.append(leaf())
            else:
                child: list[object] = []
                fill(child, depth - 1)
                node.append(child)

    root: object = leaf()
    depth = 1
    while left:
        new_root: list[object] = [root]
        fill(new_root, depth)
        root, depth = new_root, depth + 1
    return root


def _around_powers(max_links: int, depth: int) -> list[int]:
    counts = {1, 2, 3}
    for power in (max_links**d for d in range(1, depth + 1)):
        counts |= {power - 1, power, power + 1, power + 2}
    return sorted(counts)


@pytest.mark.parametrize(("max_links", "depth"), [(2, 4), (3, 3), (5, 2)])
def test_bottom_up_grouping_matches_kubo_top_down_layout(max_links: int, depth: int):
    """With tiny chunks and fan-out the same code reaches depth 3 to 5, around every point where a
    level is added, which is where bottom-up grouping and Kubo's top-down filling could disagree."""
    for leaves in _around_powers(max_links, depth):
        root, _, internal, _ = _collect(1, leaves, chunk_size=1, max_links=max_links)
        assert _shape(root, internal) == kubo_balanced_shape(leaves, max_links), leaves
