"""The hostile-scene builders really build what they claim, and build it without setting it off.

A security test that uploads a "hostile" asset proves nothing if the asset lost its payload on the way
(a driver saved as a simple expression, a relative path Blender remapped on save, an image left
orphaned and dropped). So each kind is built by ``tests/hostile_scenes.py`` in a child process and then
read back by a second Blender child that opens it with scripts disabled and reports what it holds.
A few renders close the loop: opened the trusting way the payloads do fire and the secret does show,
and the honest scenes show their texture (cyan: Blender's colour for a *missing* image is magenta).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devnet.process import ROOT

BUILDER = Path(__file__).resolve().parent / "hostile_scenes.py"
GREEN = [0, 255, 0]
CYAN = [0, 255, 255]
RELATIVE_OUTSIDE = "//../../../outside/"

# Runs in a bpy child: opens the .blend without running any of its Python and prints what it carries.
FACTS_PROBE = r"""
import json, os, sys
import bpy

bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=False)
scene = bpy.context.scene
facts = {
    "camera": scene.camera is not None,
    "objects": {o.name: (o.library.filepath if o.library else None) for o in scene.objects},
    "texts": {t.name: {"use_module": t.use_module, "body": t.as_string()} for t in bpy.data.texts},
    "drivers": [
        {"path": f.data_path, "index": f.array_index, "type": f.driver.type,
         "expression": f.driver.expression, "simple": f.driver.is_simple_expression}
        for o in bpy.data.objects if o.animation_data for f in o.animation_data.drivers
    ],
    "use_freestyle": scene.render.use_freestyle,
    "freestyle_mode": scene.view_layers[0].freestyle_settings.mode,
    "freestyle_modules": [
        m.script.name if m.script else None for m in scene.view_layers[0].freestyle_settings.modules
    ],
    "render_filepath": scene.render.filepath,
    "resolution": [scene.render.resolution_x, scene.render.resolution_y,
                   scene.render.resolution_percentage],
    "eevee_samples": scene.eevee.taa_render_samples,
    "cycles_samples": getattr(getattr(scene, "cycles", None), "samples", None),
    "images": {i.name: {"filepath": i.filepath, "packed": i.packed_file is not None}
               for i in bpy.data.images if i.type == "IMAGE"},
    "libraries": [lib.filepath for lib in bpy.data.libraries],
    "blend_paths": sorted(bpy.utils.blend_paths(absolute=False)),
}
facts["import_paths"] = [
    {"group": g.name, "node": n.name, "type": n.bl_idname, "path": n.inputs["Path"].default_value,
     "linked": n.inputs["Path"].is_linked, "library": g.library.filepath if g.library else None}
    for g in bpy.data.node_groups for n in g.nodes if n.bl_idname.startswith("GeometryNodeImport")
]
facts["group_nodes"] = sorted(
    (g.name, n.node_tree.name) for g in bpy.data.node_groups for n in g.nodes
    if n.bl_idname == "GeometryNodeGroup" and n.node_tree
)
facts["ies"] = [
    (n.name, n.mode, n.filepath)
    for light in bpy.data.lights if light.node_tree for n in light.node_tree.nodes
    if n.bl_idname == "ShaderNodeTexIES"
]
tree = getattr(scene, "compositing_node_group", None) or (scene.node_tree if scene.use_nodes else None)
facts["file_outputs"] = [
    {"path": getattr(n, "base_path", None) or getattr(n, "directory", None),
     "linked": any(s.is_linked for s in n.inputs)}
    for n in (tree.nodes if tree else []) if n.bl_idname == "CompositorNodeOutputFile"
]
sys.stdout.write("FACTS " + json.dumps(facts) + "\n")
sys.stdout.flush()
os._exit(0)
"""

# Runs in a bpy child: renders frame 1 with EEVEE at 1 sample into argv[2]; argv[3] == "1" allows scripts.
RENDER_PROBE = r"""
import os, sys
import bpy

bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=sys.argv[3] == "1")
scene = bpy.context.scene
scene.render.engine = "BLENDER_EEVEE_NEXT" if bpy.app.version < (5, 0, 0) else "BLENDER_EEVEE"
scene.eevee.taa_render_samples = 1
scene.frame_set(1)
bpy.ops.render.render(write_still=False)
bpy.data.images["Render Result"].save_render(sys.argv[2])
sys.stdout.flush()
os._exit(0)
"""


def build(kind: str, tmp_path: Path) -> tuple[dict[str, Any], Path, Path]:
    """Runs the builder; returns its JSON, OUT_DIR and OUTSIDE_DIR. Its stdout must be that one line."""
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    done = subprocess.run(
        [sys.executable, str(BUILDER), kind, str(out_dir), str(outside)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0]), out_dir, outside


def facts(blend: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", FACTS_PROBE, str(blend)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("FACTS "))
    return json.loads(line.removeprefix("FACTS "))


def render(blend: Path, png: Path, *, scripts: bool = False) -> Image.Image:
    done = subprocess.run(
        [sys.executable, "-c", RENDER_PROBE, str(blend), str(png), "1" if scripts else "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Image.open(png).convert("RGB")


def _pixels(image: Image.Image) -> list[tuple[int, ...]]:
    """RGB triples, read from raw bytes (``getdata`` is deprecated in newer Pillow)."""
    data = image.convert("RGB").tobytes()
    return [tuple(data[i : i + 3]) for i in range(0, len(data), 3)]


def share(image: Image.Image, rgb: list[int], box: tuple[int, int, int, int] | None = None) -> float:
    """The fraction of pixels (in ``box``) within 2 levels of ``rgb``."""
    pixels = _pixels(image.crop(box) if box else image)
    close = sum(all(abs(a - b) <= 2 for a, b in zip(p, rgb, strict=True)) for p in pixels)
    return close / len(pixels)


def solid_png(path: Path) -> list[int]:
    """The one colour of an 8x8 solid PNG (the test fails if it is not one)."""
    image = Image.open(path).convert("RGB")
    assert image.size == (8, 8)
    colours = Counter(_pixels(image))
    assert len(colours) == 1
    return list(next(iter(colours)))


def markers(outside: Path) -> list[str]:
    folder = outside / "markers"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- what each kind must carry ------------------------------------------------------------------------


def check_text_block(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    text = f["texts"]["autorun.py"]
    assert text["use_module"] is True
    assert str(outside / "markers" / "text_block_ran") in text["body"]


def check_python_driver(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    [driver] = f["drivers"]
    assert (driver["path"], driver["index"], driver["type"]) == ("location", 0, "SCRIPTED")
    assert driver["simple"] is False  # so only full Python can evaluate it
    assert str(outside / "markers" / "driver_ran") in driver["expression"]


def check_freestyle(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["use_freestyle"] is True
    assert f["freestyle_mode"] == "SCRIPT"
    [script] = f["freestyle_modules"]
    assert str(outside / "markers" / "freestyle_ran") in f["texts"][script]["body"]


def check_file_output(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["file_outputs"] == [{"path": str(outside / "file_output") + "/", "linked": True}]


def check_render_filepath(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["render_filepath"] == str(outside / "render_out" / "frame_")


def check_image_absolute(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert [(i["filepath"], i["packed"]) for i in f["images"].values()] == [
        (str(outside / "secret.png"), False)
    ]
    assert solid_png(outside / "secret.png") == GREEN


def check_image_relative(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    path = RELATIVE_OUTSIDE + "secret.png"
    assert [(i["filepath"], i["packed"]) for i in f["images"].values()] == [(path, False)]
    assert f["blend_paths"] == [path]
    assert solid_png(outside / "secret.png") == GREEN


def check_library_absolute(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    lib = str(outside / "lib.blend")
    assert f["libraries"] == [lib]
    assert f["blend_paths"] == [lib]
    assert f["objects"]["SecretPlane"] == lib  # linked, found, and in the scene


def check_library_relative(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    lib = RELATIVE_OUTSIDE + "lib.blend"
    assert f["libraries"] == [lib]
    assert f["blend_paths"] == [lib]
    assert (outside / "lib.blend").read_bytes().startswith(b"BLENDER")


def check_huge_output(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["resolution"] == [16384, 16384, 100]


def check_million_samples(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert result["samples"] >= 1_000  # a real ask (1,000,000 unless the RNA maximum is lower)
    assert f["eevee_samples"] >= result["samples"]
    if f["cycles_samples"] is not None:
        assert f["cycles_samples"] >= min(result["samples"], 1_000_000)


def check_random_bytes(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    data = Path(result["asset"]).read_bytes()
    assert len(data) == 64 * 1024
    assert not data.startswith(b"BLENDER")


def check_honest(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["camera"] is True
    assert (f["texts"], f["drivers"], f["libraries"], f["blend_paths"]) == ({}, [], [], [])
    assert f["resolution"] == [32, 24, 100]
    assert f["eevee_samples"] == 1


def check_honest_packed(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    [image] = f["images"].values()
    assert image["packed"] is True
    assert not Path(image["filepath"]).exists()  # the texture now lives only inside the .blend
    assert f["blend_paths"] == []


def check_zip_slip(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    with zipfile.ZipFile(result["asset"]) as zf:
        assert zf.namelist() == ["scene.blend", "../../zip_slip_escaped.txt"]
        assert zf.read("scene.blend").startswith(b"BLENDER")
    assert result["escape_name"] == "zip_slip_escaped.txt"


def check_zip_bomb(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    with zipfile.ZipFile(result["asset"]) as zf:
        sizes = {m.filename: m.file_size for m in zf.infolist()}
        assert zf.read("scene.blend").startswith(b"BLENDER")
    assert sizes["padding.bin"] == 1024**3
    assert set(sizes) == {"scene.blend", "padding.bin"}
    assert Path(result["asset"]).stat().st_size < 8 * 1024**2


def check_tar_symlink(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    with tarfile.open(result["asset"]) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members) == ["scene.blend", "textures", "textures/tar_symlink_escaped.txt"]
        assert members["scene.blend"].isfile()
        assert members["textures"].issym() and members["textures"].linkname == str(outside.resolve())
        assert members["textures/tar_symlink_escaped.txt"].isfile()
        blend = out_dir.parent / "inner.blend"
        source = tf.extractfile("scene.blend")
        assert source is not None
        blend.write_bytes(source.read())
    [image] = facts(blend)["images"].values()
    assert image == {"filepath": "//textures/secret.png", "packed": False}
    assert solid_png(outside / "secret.png") == GREEN
    assert result["escape_name"] == "tar_symlink_escaped.txt"


def check_honest_archive(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    unpacked = out_dir.parent / "unpacked"
    with zipfile.ZipFile(result["asset"]) as zf:
        assert sorted(zf.namelist()) == ["project/scene.blend", "project/textures/tint.png"]
        zf.extractall(unpacked)
    assert solid_png(unpacked / "project" / "textures" / "tint.png") == result["expect_rgb"]
    inner = facts(unpacked / "project" / "scene.blend")
    [image] = inner["images"].values()
    assert image == {"filepath": "//textures/tint.png", "packed": False}


IMPORT_NODES = {
    "text": ("GeometryNodeImportText", "secret.txt"),
    "csv": ("GeometryNodeImportCSV", "secret.csv"),
    "obj": ("GeometryNodeImportOBJ", "secret.obj"),
    "ply": ("GeometryNodeImportPLY", "secret.ply"),
    "stl": ("GeometryNodeImportSTL", "secret.stl"),
    "vdb": ("GeometryNodeImportVDB", "secret.vdb"),
}


def _reader(group: str, kind: str, path: str, *, linked: bool = False, library: str | None = None) -> dict:
    node_type = IMPORT_NODES[kind][0]
    return {"group": group, "node": "Read Secret", "type": node_type, "path": path, "linked": linked,
            "library": library}  # fmt: skip


def check_import(kind: str) -> Callable[[dict[str, Any], dict[str, Any], Path, Path], None]:
    def check(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
        secret = outside / IMPORT_NODES[kind][1]
        assert f["import_paths"] == [_reader("ReadSecret", kind, str(secret))]
        assert secret.read_text()  # the private file it aims at is there
        assert result["node"] == "Read Secret"

    return check


def check_import_computed(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["import_paths"] == [_reader("ReadSecret", "text", "", linked=True)]


def check_import_nested(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["import_paths"] == [_reader("ReadSecretInner", "text", str(outside / "secret.txt"))]
    assert f["group_nodes"] == [["ReadSecret", "ReadSecretInner"]]  # the reader sits one group down


def check_import_library(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    unpacked = out_dir.parent / "unpacked"
    with zipfile.ZipFile(result["asset"]) as zf:
        assert sorted(zf.namelist()) == ["libs/lib.blend", "scene.blend"]
        zf.extractall(unpacked)
    inner = facts(unpacked / "scene.blend")
    assert inner["libraries"] == ["//libs/lib.blend"]  # inside the job: the link itself is allowed
    secret = str(outside / "secret.txt")
    assert inner["import_paths"] == [_reader("LinkedReaderInner", "text", secret, library="//libs/lib.blend")]


def check_ies_outside(result: dict[str, Any], f: dict[str, Any], out_dir: Path, outside: Path) -> None:
    assert f["ies"] == [["Lamp Profile", "EXTERNAL", str(outside / "secret.ies")]]
    assert (outside / "secret.ies").read_text().startswith("IESNA:LM-63")


Check = Callable[[dict[str, Any], dict[str, Any], Path, Path], None]
KINDS: dict[str, tuple[Check, list[int] | None]] = {
    "text-block": (check_text_block, None),
    "python-driver": (check_python_driver, None),
    "freestyle-script": (check_freestyle, None),
    "file-output": (check_file_output, None),
    "render-filepath": (check_render_filepath, None),
    "image-absolute": (check_image_absolute, GREEN),
    "image-relative": (check_image_relative, GREEN),
    "library-absolute": (check_library_absolute, GREEN),
    "library-relative": (check_library_relative, GREEN),
    **{f"import-{kind}": (check_import(kind), GREEN) for kind in IMPORT_NODES},
    "import-computed": (check_import_computed, GREEN),
    "import-nested": (check_import_nested, GREEN),
    "import-library": (check_import_library, GREEN),
    "ies-outside": (check_ies_outside, None),
    "huge-output": (check_huge_output, None),
    "million-samples": (check_million_samples, None),
    "zip-slip": (check_zip_slip, None),
    "tar-symlink": (check_tar_symlink, GREEN),
    "zip-bomb": (check_zip_bomb, None),
    "random-bytes": (check_random_bytes, None),
    "honest": (check_honest, None),
    "honest-packed": (check_honest_packed, None),
    "honest-archive": (check_honest_archive, None),
}
ARCHIVES = {
    "zip-slip": "job.zip",
    "tar-symlink": "job.tar.gz",
    "zip-bomb": "job.zip",
    "honest-archive": "job.zip",
    "import-library": "job.zip",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_builder_carries_its_payload_without_running_it(kind: str, tmp_path: Path) -> None:
    check, secret_rgb = KINDS[kind]
    result, out_dir, outside = build(kind, tmp_path)

    asset = Path(result["asset"])
    assert asset.is_absolute() and asset.parent == out_dir.resolve()
    assert asset.name == ARCHIVES.get(kind, "scene.blend")
    assert sorted(p.name for p in out_dir.iterdir()) == [asset.name]  # no .blend1, no leftovers
    assert result["secret_rgb"] == secret_rgb
    assert result.get("expect_rgb") == (CYAN if kind.startswith("honest-") else None)

    blend_facts: dict[str, Any] = {}
    if asset.name == "scene.blend" and kind != "random-bytes":
        blend_facts = facts(asset)
    check(result, blend_facts, out_dir, outside)
    assert markers(outside) == []  # neither building nor reading it back ran the payload


@pytest.mark.parametrize(
    ("kind", "marker"),
    [
        ("text-block", "text_block_ran"),
        ("python-driver", "driver_ran"),
        ("freestyle-script", "freestyle_ran"),
    ],
)
def test_payload_fires_when_scripts_are_allowed(kind: str, marker: str, tmp_path: Path) -> None:
    """Control: opened and rendered the trusting way, each Python payload does run."""
    result, _, outside = build(kind, tmp_path)
    render(Path(result["asset"]), tmp_path / "frame.png", scripts=True)
    assert markers(outside) == [marker]


@pytest.mark.parametrize("kind", ["image-absolute", "library-absolute"])
def test_secret_shows_when_the_path_is_followed(kind: str, tmp_path: Path) -> None:
    """Control: where nothing stops it, the render is mostly the secret's green."""
    result, _, _ = build(kind, tmp_path)
    frame = render(Path(result["asset"]), tmp_path / "frame.png")
    assert share(frame, result["secret_rgb"]) > 0.9


# Runs in a bpy child: opens the scene the trusting way, evaluates it, and prints how many vertices the
# import reader object has: more than none only if its import node read the secret file.
READ_PROBE = r"""
import os, sys
import bpy

bpy.ops.wm.open_mainfile(filepath=sys.argv[1], use_scripts=True)
reader = bpy.data.objects["Reader"].evaluated_get(bpy.context.evaluated_depsgraph_get())
sys.stdout.write(f"VERTICES {len(reader.to_mesh().vertices)}\n")
sys.stdout.flush()
os._exit(0)
"""


def read_vertices(blend: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", READ_PROBE, str(blend)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(next(ln for ln in done.stdout.splitlines() if ln.startswith("VERTICES ")).split()[1])


@pytest.mark.parametrize(
    ("kind", "vertices"),
    [
        ("import-text", 506),  # "TOP SECRET" drawn as filled curves
        ("import-csv", 24),  # three rows, a cube on each
        ("import-obj", 4),
        ("import-ply", 4),
        ("import-stl", 4),
        ("import-computed", 506),
        ("import-nested", 506),
        ("import-library", 506),
    ],
)
def test_import_nodes_read_the_secret_when_nothing_stops_them(
    kind: str, vertices: int, tmp_path: Path
) -> None:
    """Control: opened the trusting way, each import node really reads the file outside the job.

    (The VDB case is left out: nothing here writes a real OpenVDB grid; its refusal is about the path.)
    """
    result, out_dir, outside = build(kind, tmp_path)
    blend = Path(result["asset"])
    if blend.suffix == ".zip":
        with zipfile.ZipFile(blend) as zf:
            zf.extractall(out_dir / "unpacked")
        blend = out_dir / "unpacked" / "scene.blend"
    assert read_vertices(blend) == vertices
    (outside / "secret.txt").unlink(missing_ok=True)
    for name in ("secret.csv", "secret.obj", "secret.ply", "secret.stl"):
        (outside / name).unlink(missing_ok=True)
    assert read_vertices(blend) == 0  # and without the file there is nothing: it came from the file


def test_an_imported_secret_fills_the_frame_when_nothing_stops_it(tmp_path: Path) -> None:
    result, _, _ = build("import-obj", tmp_path)
    frame = render(Path(result["asset"]), tmp_path / "frame.png", scripts=True)
    assert share(frame, result["secret_rgb"]) > 0.9


def test_the_older_kinds_keep_their_command_lines(tmp_path: Path) -> None:
    """``evil`` and ``no-camera`` take their own arguments (tests/test_render_safety.py uses them)."""
    marker_dir, outside = tmp_path / "markers", tmp_path / "outside"
    marker_dir.mkdir()
    outside.mkdir()
    for args in (
        ["evil", tmp_path / "evil.blend", marker_dir, outside],
        ["no-camera", tmp_path / "nc.blend"],
    ):
        subprocess.run(
            [sys.executable, str(BUILDER), *map(str, args)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
    evil = facts(tmp_path / "evil.blend")
    assert evil["texts"]["autorun.py"]["use_module"] is True
    assert [d["type"] for d in evil["drivers"]] == ["SCRIPTED"]
    assert evil["file_outputs"] == [{"path": str(outside) + "/", "linked": True}]
    assert facts(tmp_path / "nc.blend")["camera"] is False
    assert list(marker_dir.iterdir()) == []
