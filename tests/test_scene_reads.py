"""The scene check's two halves: which paths a render really reads, and what is done with each.

``judge_reads`` is plain Python over real files (inside, outside, missing, links, UDIM tiles and frame
sequences). ``scene_reads`` runs in a real ``bpy`` child over one scene that mixes every way a file is
named but not read (weak references, a fake-user image, a packed image, an unused node group) with the
ways it is read (a material's texture, an image only a driver reaches, an import node in a group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.process import ROOT
from veriframe_addon.render_child import FileRead, judge_reads

CHILD = ROOT / "veriframe_addon" / "render_child.py"


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    job, outside, blender = tmp_path / "job", tmp_path / "outside", tmp_path / "blender" / "datafiles"
    for folder in (job / "scene", outside, blender / "assets"):
        folder.mkdir(parents=True)
    return {"job": job, "outside": outside, "blender": blender}


def _judge(reads: list[FileRead], places: dict[str, Path]) -> tuple[list[str], list[str]]:
    return judge_reads(reads, str(places["job"]), [str(places["blender"])])


def _read(path: Path | str, **extra: object) -> FileRead:
    return FileRead(str(path), str(path), "image 'x'", **extra)  # type: ignore[arg-type]


def test_files_inside_the_job_or_blender_are_fine_and_missing_ones_are_reported(
    places: dict[str, Path],
) -> None:
    (places["job"] / "scene" / "tex.png").write_bytes(b"png")
    (places["blender"] / "assets" / "brushes.blend").write_bytes(b"BLENDER")
    reads = [
        _read("scene/tex.png"),  # relative: from the job folder, where the render runs
        _read(places["job"] / "scene" / "tex.png"),
        _read(places["blender"] / "assets" / "brushes.blend"),
        _read(places["job"] / "scene" / "forgot-to-pack.png"),
    ]
    problems, missing = _judge(reads, places)
    assert problems == []
    assert missing == [f"{places['job'] / 'scene' / 'forgot-to-pack.png'} (image 'x')"]


def test_an_outside_file_is_refused_only_where_it_exists(places: dict[str, Path]) -> None:
    secret = places["outside"] / "secret.png"
    secret.write_bytes(b"png")
    problems, missing = _judge([_read(secret), _read("/Users/creator/wood.png")], places)
    assert problems == [f"image 'x' names a file outside the job folder: {secret} (pack it into the .blend)"]
    assert missing == ["/Users/creator/wood.png (image 'x')"]


def test_dot_dot_and_links_out_of_the_job_are_followed(places: dict[str, Path]) -> None:
    secret = places["outside"] / "secret.png"
    secret.write_bytes(b"png")
    (places["job"] / "scene" / "textures").symlink_to(places["outside"])
    escaping = [_read("../outside/secret.png"), _read("scene/textures/secret.png")]
    problems, _ = _judge(escaping, places)
    assert len(problems) == 2 and all("outside the job folder" in p for p in problems)
    # A link out of Blender's folder is not Blender's file either.
    (places["blender"] / "assets" / "out").symlink_to(places["outside"])
    problems, _ = _judge([_read(places["blender"] / "assets" / "out" / "secret.png")], places)
    assert len(problems) == 1


def test_udim_tiles_and_frame_sequences_count_their_siblings(places: dict[str, Path]) -> None:
    (places["outside"] / "skin.1002.png").write_bytes(b"png")
    (places["outside"] / "smoke_0042.png").write_bytes(b"png")
    tiles = _read(places["outside"] / "skin.<UDIM>.png")
    frames = _read(places["outside"] / "smoke_0001.png", sequence=True)
    single = _read(places["outside"] / "smoke_0001.png")  # not a sequence: only that file counts
    problems, missing = _judge([tiles, frames, single], places)
    assert len(problems) == 2
    assert missing == [f"{places['outside'] / 'smoke_0001.png'} (image 'x')"]


def test_a_node_path_outside_is_refused_even_if_absent(places: dict[str, Path]) -> None:
    node = FileRead("/data/points.csv", "/data/points.csv", "node 'Import CSV'", absent_is_harmless=False)
    problems, missing = _judge([node], places)
    assert len(problems) == 1 and problems[0].startswith("node 'Import CSV' names a file outside")
    assert missing == []


def test_a_cache_the_render_may_write_must_be_inside_even_if_absent(places: dict[str, Path]) -> None:
    cache = FileRead("/var/cache/fluid", "/var/cache/fluid/nowhere", "modifier 'Fluid'", writes=True)
    inside = FileRead(
        "//cache_fluid", str(places["job"] / "scene" / "cache_fluid"), "modifier 'Fluid'", writes=True
    )
    problems, missing = _judge([cache, inside], places)
    assert problems == ["modifier 'Fluid' would write outside the job folder: /var/cache/fluid/nowhere"]
    assert missing == []


# Runs in a bpy child: builds one scene with every way of naming a file, saves it into JOB/scene, reopens
# it (as the worker does) and prints what render_child.scene_reads makes of it.
READS_PROBE = r"""
import importlib.util, json, os, sys
import bpy

job, outside = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("render_child", sys.argv[3])
child = sys.modules["render_child"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)

def image(name, path):
    img = bpy.data.images.new(name, 4, 4)
    img.source = "FILE"
    img.filepath = path
    return img

bpy.ops.wm.read_factory_settings(use_empty=False)
secret = os.path.join(outside, "secret.png")
tree = bpy.data.materials["Material"].node_tree
tree.nodes.new("ShaderNodeTexImage").image = image("used", os.path.join(outside, "used.png"))
image("fake-user", secret).use_fake_user = True
packed = bpy.data.images.new("packed", 4, 4)
packed.pack()
packed.filepath = secret
driven = image("driver-target", os.path.join(outside, "driven.png"))
driven.use_fake_user = True  # kept in the file only by its fake user: no material uses it
driver = bpy.data.objects["Cube"].driver_add("location", 1).driver
driver.type = "SUM"
var = driver.variables.new()
var.targets[0].id_type = "IMAGE"
var.targets[0].id = driven
var.targets[0].data_path = "size[0]"

def group(name, path, computed=False):
    g = bpy.data.node_groups.new(name, "GeometryNodeTree")
    node = g.nodes.new("GeometryNodeImportText")
    node.name = "Reader"
    if computed:
        g.links.new(g.nodes.new("FunctionNodeInputString").outputs[0], node.inputs["Path"])
    else:
        node.inputs["Path"].default_value = path
    return g

bpy.data.objects["Cube"].modifiers.new("A", "NODES").node_group = group("Used", "//data.txt")
bpy.data.objects["Cube"].modifiers.new("B", "NODES").node_group = group("Computed", "", computed=True)
group("Unused", secret)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(job, "scene", "scene.blend"))
bpy.ops.wm.open_mainfile(filepath=os.path.join(job, "scene", "scene.blend"), load_ui=False)
found = child.scene_reads(bpy, bpy.context.scene)
weak = sorted({i.library_weak_reference.filepath for i in bpy.data.materials if i.library_weak_reference})
sys.stdout.write("READS " + json.dumps({
    "reads": sorted({r.owner: os.path.basename(r.absolute) for r in found.reads}.items()),
    "computed": found.computed,
    "weak": weak,
    "unexplained": [r.path for r in child.unexplained(bpy, found)],
}) + "\n")
sys.stdout.flush()
os._exit(0)
"""


def test_scene_reads_lists_what_the_render_uses_and_nothing_it_only_mentions(tmp_path: Path) -> None:
    job, outside = tmp_path / "job", tmp_path / "outside"
    (job / "scene").mkdir(parents=True)
    outside.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", READS_PROBE, str(job), str(outside), str(CHILD)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONNOUSERSITE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(
        next(ln for ln in done.stdout.splitlines() if ln.startswith("READS ")).removeprefix("READS ")
    )
    assert result["reads"] == [
        ["image 'driver-target'", "driven.png"],  # only a fake user, but a driver reads it
        ["image 'used'", "used.png"],
        ["node 'Reader' in node group 'Used'", "data.txt"],
    ]
    assert result["computed"] == [
        "node 'Reader' in node group 'Computed' reads a file whose path ('Path') is computed by other "
        "nodes, so it cannot be checked before the render (type the path into the node instead)"
    ]
    assert result["weak"], "the default Material has a weak reference to Blender's essentials"
    assert result["unexplained"] == []  # every path Blender lists is accounted for
