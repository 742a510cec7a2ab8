"""Writes the hostile (and a few honest) job assets the security tests upload to a real worker.

Run with a Python that has ``bpy``::

    python tests/hostile_scenes.py KIND OUT_DIR OUTSIDE_DIR
    python tests/hostile_scenes.py evil OUT.blend MARKER_DIR OUTSIDE_DIR    (older form, kept)
    python tests/hostile_scenes.py no-camera OUT.blend                      (older form, kept)

The asset goes into OUT_DIR (``scene.blend``, or ``job.zip`` / ``job.tar.gz`` for the archive kinds);
files the job must never reach (a secret picture, a library) go into OUTSIDE_DIR. One JSON line on
stdout says what to upload and what a leak would look like::

    {"asset": "/abs/OUT_DIR/scene.blend", "secret_rgb": [0, 255, 0] or null, ...}

``secret_rgb`` is set for kinds that try to read OUTSIDE_DIR/secret.png (or a library holding the same
green): they show it on a plane filling the camera's view, so a render that leaked it is mostly green.
A payload that runs Python writes a marker file into OUTSIDE_DIR/markers/ and does so only when the
attack really runs, never while the asset is built. The honest kinds add ``expect_rgb``: the colour a
correct render shows where their texture is. That colour is cyan, not magenta, on purpose: Blender draws
a *missing* image as magenta (1, 0, 1), so a magenta texture could not tell "loaded" from "lost".

Every scene is the sample scene (``devnet.sample_scene``) at 32x24 pixels and 1 sample, changed after
it is built. Blender's own chatter on stdout is sent to stderr while building, so stdout holds only the
JSON line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from mathutils import Matrix

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devnet.sample_scene import build_scene
from tests.blender_output import stdout_to_stderr

WIDTH, HEIGHT, SAMPLES = 32, 24, 1
SECRET_RGB = (0, 255, 0)
HONEST_RGB = (0, 255, 255)
# The tests put the job at DATA/jobs/<id>/ and OUTSIDE_DIR at DATA/../outside: three levels up and over.
OUTSIDE_FROM_JOB = "//../../../outside/"
HUGE_SIDE = 16_384
MANY_SAMPLES = 1_000_000
BOMB_BYTES = 1024**3
CHUNK = 1024 * 1024

Result = dict[str, Any]


# --- pieces the scenes are made of ---------------------------------------------------------------------


def _save(out: Path) -> None:
    """Saves uncompressed and without remapping, so a planted relative path is stored exactly as set.

    No ``.blend1`` backup is kept: the scene is saved twice and the job folder should hold only the asset.
    """
    bpy.context.preferences.filepaths.save_version = 0
    bpy.ops.wm.save_as_mainfile(filepath=str(out), compress=False, relative_remap=False)


def _base(out: Path) -> bpy.types.Scene:
    """The sample scene, with the Standard view transform so an emitted colour renders as itself.

    An old file at ``out`` is removed first, or Blender's first save would keep it as ``.blend1``.
    """
    out.unlink(missing_ok=True)
    build_scene(out, WIDTH, HEIGHT, SAMPLES)
    scene = bpy.context.scene
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    return scene


def _write_png(path: Path, rgb: tuple[int, int, int]) -> Path:
    """A solid 8x8 PNG; Pillow writes it so no Blender image is left behind in the scene."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), rgb).save(path)
    return path


def _write_secret(outside_dir: Path) -> Path:
    """The stand-in for a private file on the operator's disk: pure green, so a leak is easy to see."""
    return _write_png(outside_dir / "secret.png", SECRET_RGB)


def _marker(outside_dir: Path, name: str) -> Path:
    """Where a payload reports that it ran; the folder exists (empty) so the tests can list it."""
    markers = outside_dir / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    return markers / name


def _write_marker_code(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"


def _emission_material(
    name: str, *, image: bpy.types.Image | None = None, rgb: tuple[int, int, int] | None = None
) -> bpy.types.Material:
    """Emission at strength 1: unlit, so the render shows the image's (or the colour's) exact value."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    if rgb is not None:
        emission.inputs["Color"].default_value = (*(c / 255 for c in rgb), 1.0)
    if image is not None:
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = image
        texture.interpolation = "Closest"
        links.new(texture.outputs["Color"], emission.inputs["Color"])
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return mat


def _screen_plane(name: str, material: bpy.types.Material, *, lower_half: bool = False) -> bpy.types.Object:
    """A plane just in front of the camera covering its whole view (or the lower half of it).

    It is placed from the camera's own view frame, so it fits whatever lens the sample scene uses.
    """
    scene = bpy.context.scene
    camera = scene.camera
    corners = camera.data.view_frame(scene=scene)
    half_w = max(abs(c.x) for c in corners) * 1.05
    half_h = max(abs(c.y) for c in corners) * 1.05
    depth = corners[0].z  # negative: the camera looks down its -Z axis, the frame is drawn at this depth
    bpy.ops.mesh.primitive_plane_add(size=1.0)
    plane = bpy.context.object
    plane.name = name
    plane.data.materials.append(material)
    if lower_half:
        height, centre_y = half_h, -half_h / 2
    else:
        height, centre_y = 2 * half_h, 0.0
    plane.matrix_world = (  # the plane is 1 x 1, so scaling it by the frame's size makes it fit
        camera.matrix_world
        @ Matrix.Translation((0.0, centre_y, depth))
        @ Matrix.Diagonal((2 * half_w, height, 1.0, 1.0))
    )
    return plane


def _image_plane(image_path: Path, name: str, *, lower_half: bool = False) -> bpy.types.Image:
    """Shows the image at ``image_path`` in front of the camera; returns the (unpacked) image."""
    image = bpy.data.images.load(str(image_path))
    _screen_plane(name, _emission_material(f"{name}Emission", image=image), lower_half=lower_half)
    return image


def _add_text_block(marker: Path) -> bpy.types.Text:
    """A text block registered to run as a module whenever the file is opened with scripts allowed."""
    text = bpy.data.texts.new("autorun.py")
    text.write(_write_marker_code(marker))
    text.use_module = True
    return text


def _add_python_driver(marker: Path) -> None:
    """A driver no simple-expression evaluator accepts: only full Python can run it (and then it writes)."""
    driver = bpy.data.objects["Cube"].driver_add("location", 0).driver
    driver.type = "SCRIPTED"
    driver.expression = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') * 0"


def _compositor_tree(scene: bpy.types.Scene) -> bpy.types.NodeTree:
    """The scene's compositor node tree on 4.x (``scene.node_tree``) and 5.x (``compositing_node_group``)."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is None:
            tree = bpy.data.node_groups.new("Compositor", "CompositorNodeTree")
            scene.compositing_node_group = tree
        if hasattr(scene.render, "use_compositing"):
            scene.render.use_compositing = True
        return tree
    scene.use_nodes = True
    return scene.node_tree


def _add_file_output(scene: bpy.types.Scene, directory: Path) -> None:
    """A compositor File Output node fed the render, writing to ``directory`` (outside the job)."""
    tree = _compositor_tree(scene)
    layers = tree.nodes.get("Render Layers") or tree.nodes.new("CompositorNodeRLayers")
    file_out = tree.nodes.new("CompositorNodeOutputFile")
    if hasattr(file_out, "base_path"):  # 4.x
        file_out.base_path = str(directory) + "/"
    else:  # 5.x splits the path into a folder and a name
        file_out.directory = str(directory) + "/"
        if hasattr(file_out, "file_name"):
            file_out.file_name = "leak_"
    if not file_out.inputs and hasattr(file_out, "file_output_items"):  # 5.x starts with no inputs
        file_out.file_output_items.new("RGBA", "Image")
    tree.links.new(layers.outputs["Image"], file_out.inputs[0])


# --- kinds that run Python ------------------------------------------------------------------------------


def text_block(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    _add_text_block(_marker(outside_dir, "text_block_ran"))
    _save(out)
    return {"asset": out}


def python_driver(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    _add_python_driver(_marker(outside_dir, "driver_ran"))
    _save(out)
    return {"asset": out}


def freestyle_script(out_dir: Path, outside_dir: Path) -> Result:
    """Freestyle's SCRIPT mode runs a text block as a style module at render time."""
    out = out_dir / "scene.blend"
    scene = _base(out)
    text = bpy.data.texts.new("style_module.py")
    text.write(_write_marker_code(_marker(outside_dir, "freestyle_ran")))
    scene.render.use_freestyle = True
    settings = scene.view_layers[0].freestyle_settings
    settings.mode = "SCRIPT"
    module = settings.modules.new()
    module.script = text
    module.use = True
    _save(out)
    return {"asset": out}


# --- kinds that write outside the job folder --------------------------------------------------------------


def file_output(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    scene = _base(out)
    _add_file_output(scene, outside_dir / "file_output")
    _save(out)
    return {"asset": out}


def render_filepath(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    scene = _base(out)
    scene.render.filepath = str(outside_dir / "render_out" / "frame_")
    _save(out)
    return {"asset": out}


# --- kinds that read outside the job folder ---------------------------------------------------------------


def image_absolute(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    _image_plane(_write_secret(outside_dir), "SecretPlane")
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB}


def image_relative(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    image = _image_plane(_write_secret(outside_dir), "SecretPlane")
    image.filepath = OUTSIDE_FROM_JOB + "secret.png"
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB}


def _write_green_library(outside_dir: Path) -> Path:
    """OUTSIDE_DIR/lib.blend holding ``SecretPlane``: a green emitting plane placed in front of the camera.

    It is built in this session (so it can sit where the sample scene's camera looks), written out with
    ``libraries.write``, then deleted here so the scene can only get it back by linking.
    """
    material = _emission_material("SecretGreen", rgb=SECRET_RGB)
    plane = _screen_plane("SecretPlane", material)
    mesh = plane.data
    lib_path = outside_dir / "lib.blend"
    outside_dir.mkdir(parents=True, exist_ok=True)
    bpy.data.libraries.write(str(lib_path), {plane}, fake_user=True, compress=False)
    bpy.data.objects.remove(plane)
    bpy.data.meshes.remove(mesh)
    bpy.data.materials.remove(material)
    return lib_path


def _link_plane(lib_path: Path) -> bpy.types.Library:
    with bpy.data.libraries.load(str(lib_path), link=True) as (_source, target):
        target.objects = ["SecretPlane"]
    bpy.context.scene.collection.objects.link(target.objects[0])
    return target.objects[0].library


def library_absolute(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    _link_plane(_write_green_library(outside_dir))
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB}


def library_relative(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    library = _link_plane(_write_green_library(outside_dir))
    library.filepath = OUTSIDE_FROM_JOB + "lib.blend"
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB}


# --- kinds that read outside the job folder through Geometry Nodes import nodes ---------------------------

# What each import node would read: a stand-in for a private file, in the format the node parses. The
# geometry ones are a quad that, imported, fills the camera's view; the text is drawn as curves.
SECRET_FILES = {
    "text": ("secret.txt", "TOP SECRET\n"),
    "csv": ("secret.csv", "x,y,z\n0,0,0\n0.5,0,0\n-0.5,0,0\n"),
    "obj": ("secret.obj", "v -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\nf 1 2 3 4\n"),
    "ply": (
        "secret.ply",
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "-1 -1 0\n1 -1 0\n1 1 0\n-1 1 0\n4 0 1 2 3\n",
    ),
    "stl": (
        "secret.stl",
        "solid secret\n"
        "facet normal 0 0 1\nouter loop\nvertex -1 -1 0\nvertex 1 -1 0\nvertex 1 1 0\nendloop\nendfacet\n"
        "facet normal 0 0 1\nouter loop\nvertex -1 -1 0\nvertex 1 1 0\nvertex -1 1 0\nendloop\nendfacet\n"
        "endsolid secret\n",
    ),
    # Not a real OpenVDB grid (nothing here writes one): the refusal is about the path, not the bytes.
    "vdb": ("secret.vdb", "not an OpenVDB file, but a private one all the same\n"),
}
IMPORT_NODES = {
    "text": "GeometryNodeImportText",
    "csv": "GeometryNodeImportCSV",
    "obj": "GeometryNodeImportOBJ",
    "ply": "GeometryNodeImportPLY",
    "stl": "GeometryNodeImportSTL",
    "vdb": "GeometryNodeImportVDB",
}
IMPORT_NODE_NAME = "Read Secret"  # the node the worker must name when it refuses


def _write_secret_file(outside_dir: Path, kind: str) -> Path:
    name, body = SECRET_FILES[kind]
    path = outside_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def _geometry_tree(name: str) -> bpy.types.NodeTree:
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return tree


def _import_chain(tree: bpy.types.NodeTree, kind: str) -> tuple[bpy.types.Node, bpy.types.NodeSocket]:
    """An import node of ``kind`` and the socket that gives what it read as a mesh (text as filled curves,
    CSV rows as cubes, a volume as its surface)."""
    nodes, links = tree.nodes, tree.links
    importer = nodes.new(IMPORT_NODES[kind])
    importer.name = IMPORT_NODE_NAME
    geometry = importer.outputs[0]
    if kind == "text":
        curves = nodes.new("GeometryNodeStringToCurves")
        curves.inputs["Size"].default_value = 0.4
        links.new(geometry, curves.inputs["String"])
        geometry = curves.outputs[0]
    elif kind == "csv":
        cube = nodes.new("GeometryNodeMeshCube")
        instances = nodes.new("GeometryNodeInstanceOnPoints")
        links.new(geometry, instances.inputs["Points"])
        links.new(cube.outputs[0], instances.inputs["Instance"])
        geometry = instances.outputs[0]
    elif kind == "vdb":
        surface = nodes.new("GeometryNodeVolumeToMesh")
        links.new(geometry, surface.inputs[0])
        geometry = surface.outputs[0]
    realize = nodes.new("GeometryNodeRealizeInstances")
    links.new(geometry, realize.inputs[0])
    geometry = realize.outputs[0]
    if kind == "text":
        fill = nodes.new("GeometryNodeFillCurve")
        links.new(geometry, fill.inputs[0])
        geometry = fill.outputs[0]
    return importer, geometry


def _finish_tree(tree: bpy.types.NodeTree, geometry: bpy.types.NodeSocket) -> None:
    """Paints what was read the secret's green, unlit, and makes it the tree's output."""
    paint = tree.nodes.new("GeometryNodeSetMaterial")
    paint.inputs["Material"].default_value = _emission_material("SecretRead", rgb=SECRET_RGB)
    tree.links.new(geometry, paint.inputs["Geometry"])
    tree.links.new(paint.outputs["Geometry"], tree.nodes.new("NodeGroupOutput").inputs[0])


def _reader_object(tree: bpy.types.NodeTree) -> bpy.types.Object:
    """An object in front of the camera whose Geometry Nodes modifier is ``tree``; a -1..1 quad fills
    the view (placed from the camera's view frame, like the image planes)."""
    scene = bpy.context.scene
    camera = scene.camera
    corners = camera.data.view_frame(scene=scene)
    half_w = max(abs(c.x) for c in corners) * 1.05
    half_h = max(abs(c.y) for c in corners) * 1.05
    mesh = bpy.data.meshes.new("Reader")
    reader = bpy.data.objects.new("Reader", mesh)
    scene.collection.objects.link(reader)
    reader.modifiers.new("Read", "NODES").node_group = tree
    reader.matrix_world = (
        camera.matrix_world
        @ Matrix.Translation((0.0, 0.0, corners[0].z))
        @ Matrix.Diagonal((half_w, half_h, 1.0, 1.0))
    )
    return reader


def _import_scene(out_dir: Path, outside_dir: Path, kind: str) -> Result:
    """The sample scene and a Geometry Nodes object that imports OUTSIDE_DIR's secret by absolute path."""
    out = out_dir / "scene.blend"
    _base(out)
    tree = _geometry_tree("ReadSecret")
    importer, geometry = _import_chain(tree, kind)
    importer.inputs["Path"].default_value = str(_write_secret_file(outside_dir, kind))
    _finish_tree(tree, geometry)
    _reader_object(tree)
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB, "node": IMPORT_NODE_NAME}


def _import_kind(kind: str) -> Callable[[Path, Path], Result]:
    def build(out_dir: Path, outside_dir: Path) -> Result:
        return _import_scene(out_dir, outside_dir, kind)

    build.__doc__ = f"An Import {kind.upper()} node reading OUTSIDE_DIR/{SECRET_FILES[kind][0]}."
    return build


def import_computed(out_dir: Path, outside_dir: Path) -> Result:
    """Import Text whose path String Join builds from two strings: no constant to check."""
    out = out_dir / "scene.blend"
    _base(out)
    secret = _write_secret_file(outside_dir, "text")
    tree = _geometry_tree("ReadSecret")
    importer, geometry = _import_chain(tree, "text")
    join = tree.nodes.new("GeometryNodeStringJoin")
    for part in (secret.name, str(secret.parent) + "/"):  # a multi-input joins the last link first
        value = tree.nodes.new("FunctionNodeInputString")
        value.string = part
        tree.links.new(value.outputs[0], join.inputs["Strings"])
    tree.links.new(join.outputs[0], importer.inputs["Path"])
    _finish_tree(tree, geometry)
    _reader_object(tree)
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB, "node": IMPORT_NODE_NAME}


def _nested_reader(name: str, secret: Path) -> bpy.types.NodeTree:
    """A group holding the import node (constant path), wrapped in a second group: two levels deep."""
    inner = _geometry_tree(f"{name}Inner")
    importer, geometry = _import_chain(inner, "text")
    importer.inputs["Path"].default_value = str(secret)
    _finish_tree(inner, geometry)
    outer = _geometry_tree(name)
    group = outer.nodes.new("GeometryNodeGroup")
    group.node_tree = inner
    outer.links.new(group.outputs[0], outer.nodes.new("NodeGroupOutput").inputs[0])
    return outer


def import_nested(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    _base(out)
    _reader_object(_nested_reader("ReadSecret", _write_secret_file(outside_dir, "text")))
    _save(out)
    return {"asset": out, "secret_rgb": SECRET_RGB, "node": IMPORT_NODE_NAME}


def import_library(out_dir: Path, outside_dir: Path) -> Result:
    """A zip of the scene and ``libs/lib.blend``: the scene links the library's reader group (by
    ``//libs/lib.blend``, inside the job: allowed), whose import node reads OUTSIDE_DIR's secret by an
    absolute path."""
    asset = out_dir / "job.zip"
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        secret = _write_secret_file(outside_dir, "text")
        bpy.ops.wm.read_factory_settings(use_empty=True)
        group = _nested_reader("LinkedReader", secret)
        group.use_fake_user = True
        library = project / "lib.blend"
        bpy.data.libraries.write(str(library), {group}, fake_user=True, compress=False)
        blend = project / "scene.blend"
        _base(blend)
        with bpy.data.libraries.load(str(library), link=True, relative=True) as (_source, target):
            target.node_groups = ["LinkedReader"]
        _reader_object(target.node_groups[0])
        bpy.data.libraries[0].filepath = "//libs/lib.blend"
        _save(blend)
        with zipfile.ZipFile(asset, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(blend, "scene.blend")
            zf.write(library, "libs/lib.blend")
    return {"asset": asset, "secret_rgb": SECRET_RGB, "node": IMPORT_NODE_NAME}


IES_PROFILE = "IESNA:LM-63-2002\nTILT=NONE\n1 1000 1 3 1 1 2 0 0 0\n1 1 100\n0 45 90\n0\n100 100 100\n"


def ies_outside(out_dir: Path, outside_dir: Path) -> Result:
    """A lamp's IES Texture node (External) reading a light profile from OUTSIDE_DIR."""
    out = out_dir / "scene.blend"
    _base(out)
    profile = outside_dir / "secret.ies"
    profile.write_text(IES_PROFILE)
    light = bpy.data.lights.new("Spot", "SPOT")
    light.use_nodes = True
    ies = light.node_tree.nodes.new("ShaderNodeTexIES")
    ies.name = "Lamp Profile"
    ies.mode = "EXTERNAL"
    ies.filepath = str(profile)
    light.node_tree.links.new(ies.outputs[0], light.node_tree.nodes["Emission"].inputs["Strength"])
    lamp = bpy.data.objects.new("Spot", light)
    lamp.location = (0.0, -3.0, 4.0)
    bpy.context.scene.collection.objects.link(lamp)
    _save(out)
    return {"asset": out, "node": "Lamp Profile"}


# --- kinds that ask for too much ------------------------------------------------------------------------


def huge_output(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    scene = _base(out)
    scene.render.resolution_x = HUGE_SIDE
    scene.render.resolution_y = HUGE_SIDE
    scene.render.resolution_percentage = 100
    _save(out)
    return {"asset": out}


def million_samples(out_dir: Path, outside_dir: Path) -> Result:
    """EEVEE (and Cycles, where the add-on is loaded) asked for a million samples, or their RNA maximum."""
    out = out_dir / "scene.blend"
    scene = _base(out)
    limit = scene.eevee.bl_rna.properties["taa_render_samples"].hard_max
    samples = min(MANY_SAMPLES, limit)
    scene.eevee.taa_render_samples = samples
    cycles = getattr(scene, "cycles", None)
    if cycles is not None and hasattr(cycles, "samples"):
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            cycles.samples = min(MANY_SAMPLES, cycles.bl_rna.properties["samples"].hard_max)
    _save(out)
    return {"asset": out, "samples": samples}


# --- archives ---------------------------------------------------------------------------------------------


def _honest_blend(folder: Path) -> Path:
    out = folder / "scene.blend"
    _base(out)
    _save(out)
    return out


def zip_slip(out_dir: Path, outside_dir: Path) -> Result:
    """A member named ``../../zip_slip_escaped.txt``: a naive extractor writes it above the job folder."""
    asset = out_dir / "job.zip"
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(asset, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(_honest_blend(Path(tmp)), "scene.blend")
        zf.writestr("../../zip_slip_escaped.txt", "escaped\n")
    return {"asset": asset, "escape_name": "zip_slip_escaped.txt"}


def tar_symlink(out_dir: Path, outside_dir: Path) -> Result:
    """``textures`` links to OUTSIDE_DIR; a member writes through the link, and the scene reads through it.

    ``textures/tar_symlink_escaped.txt`` lands in OUTSIDE_DIR if links are extracted and followed; the
    scene's image ``//textures/secret.png`` reaches the secret the same way. (The member is not named
    ``secret.png``: written through the link it would overwrite the secret it is meant to leak.)
    """
    asset = out_dir / "job.tar.gz"
    _write_secret(outside_dir)
    with tempfile.TemporaryDirectory() as tmp:
        blend = Path(tmp) / "scene.blend"
        _base(blend)
        image = _image_plane(outside_dir / "secret.png", "SecretPlane")
        image.filepath = "//textures/secret.png"
        _save(blend)
        with tarfile.open(asset, "w:gz") as tf:
            tf.add(blend, "scene.blend")
            link = tarfile.TarInfo("textures")
            link.type = tarfile.SYMTYPE
            link.linkname = str(outside_dir.resolve())
            tf.addfile(link)
            payload = b"escaped\n"
            member = tarfile.TarInfo("textures/tar_symlink_escaped.txt")
            member.size = len(payload)
            tf.addfile(member, io.BytesIO(payload))
    return {"asset": asset, "secret_rgb": SECRET_RGB, "escape_name": "tar_symlink_escaped.txt"}


def zip_bomb(out_dir: Path, outside_dir: Path) -> Result:
    """1 GiB of zeros that deflate to about 1 MiB, streamed so building it needs no memory to speak of."""
    asset = out_dir / "job.zip"
    zero = bytes(CHUNK)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(asset, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(_honest_blend(Path(tmp)), "scene.blend")
        with zf.open("padding.bin", "w", force_zip64=True) as member:
            for _ in range(BOMB_BYTES // CHUNK):
                member.write(zero)
    return {"asset": asset}


def random_bytes(out_dir: Path, outside_dir: Path) -> Result:
    out = out_dir / "scene.blend"
    out.write_bytes(os.urandom(64 * 1024))
    return {"asset": out}


# --- honest kinds -----------------------------------------------------------------------------------------


def honest(out_dir: Path, outside_dir: Path) -> Result:
    return {"asset": _honest_blend(out_dir)}


def honest_packed(out_dir: Path, outside_dir: Path) -> Result:
    """The texture lives only inside the .blend (packed): its file on disk is gone before the upload."""
    out = out_dir / "scene.blend"
    _base(out)
    with tempfile.TemporaryDirectory() as tmp:
        image = _image_plane(_write_png(Path(tmp) / "tint.png", HONEST_RGB), "TintPlane", lower_half=True)
        image.pack()
    _save(out)
    return {"asset": out, "expect_rgb": HONEST_RGB}


def honest_archive(out_dir: Path, outside_dir: Path) -> Result:
    """A project folder zipped whole: the scene finds its texture by a relative path inside the archive."""
    asset = out_dir / "job.zip"
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        blend, tint = project / "scene.blend", _write_png(project / "textures" / "tint.png", HONEST_RGB)
        _base(blend)
        image = _image_plane(tint, "TintPlane", lower_half=True)
        image.filepath = "//textures/tint.png"
        _save(blend)
        with zipfile.ZipFile(asset, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(blend, "project/scene.blend")
            zf.write(tint, "project/textures/tint.png")
    return {"asset": asset, "expect_rgb": HONEST_RGB}


KINDS: dict[str, Callable[[Path, Path], Result]] = {
    "text-block": text_block,
    "python-driver": python_driver,
    "freestyle-script": freestyle_script,
    "file-output": file_output,
    "render-filepath": render_filepath,
    "image-absolute": image_absolute,
    "image-relative": image_relative,
    "library-absolute": library_absolute,
    "library-relative": library_relative,
    **{f"import-{kind}": _import_kind(kind) for kind in IMPORT_NODES},
    "import-computed": import_computed,
    "import-nested": import_nested,
    "import-library": import_library,
    "ies-outside": ies_outside,
    "huge-output": huge_output,
    "million-samples": million_samples,
    "zip-slip": zip_slip,
    "tar-symlink": tar_symlink,
    "zip-bomb": zip_bomb,
    "random-bytes": random_bytes,
    "honest": honest,
    "honest-packed": honest_packed,
    "honest-archive": honest_archive,
}


# --- the older two kinds (tests/test_render_safety.py), with their own argument lists ---------------------


def evil(out: Path, marker_dir: Path, outside_dir: Path) -> Result:
    """A text block, a Python driver and a File Output node at once, with markers in MARKER_DIR."""
    scene = _base(out)
    _add_text_block(marker_dir / "text_block_ran")
    _add_python_driver(marker_dir / "driver_ran")
    _add_file_output(scene, outside_dir)
    _save(out)
    return {"asset": out}


def no_camera(out: Path) -> Result:
    out.unlink(missing_ok=True)
    build_scene(out, WIDTH, HEIGHT, SAMPLES)
    bpy.data.objects.remove(bpy.data.objects["Camera"])
    bpy.context.scene.camera = None
    _save(out)
    return {"asset": out}


LEGACY: dict[str, Callable[..., Result]] = {"evil": evil, "no-camera": no_camera}


def build(kind: str, args: list[str]) -> Result:
    """Builds ``kind`` and returns its JSON fields, ``asset`` made absolute and ``secret_rgb`` always set."""
    if kind in LEGACY:
        result = LEGACY[kind](*(Path(a).resolve() for a in args))
    elif kind in KINDS and len(args) == 2:
        out_dir, outside_dir = (Path(a).resolve() for a in args)
        out_dir.mkdir(parents=True, exist_ok=True)
        outside_dir.mkdir(parents=True, exist_ok=True)
        result = KINDS[kind](out_dir, outside_dir)
    else:
        raise SystemExit(f"usage: {Path(__file__).name} {{{','.join(KINDS)}}} OUT_DIR OUTSIDE_DIR")
    result["asset"] = str(Path(result["asset"]).resolve())
    result.setdefault("secret_rgb", None)
    for key in ("secret_rgb", "expect_rgb"):
        if result.get(key) is not None:
            result[key] = list(result[key])
    return result


def main() -> None:
    kind, *args = sys.argv[1:] or [""]
    with stdout_to_stderr():
        result = build(kind, args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # The bpy module can hang in its exit-time cleanup after compositor use; the asset is written already.
    os._exit(0)
