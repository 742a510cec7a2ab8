"""Honest scenes for the scene check: files Blender ships, and the everyday things users do to them.

Runs inside any test Blender, the ``bpy`` module or a binary::

    python tests/honest_corpus.py shipped OUT_DIR
    blender -b --factory-startup --python tests/honest_corpus.py -- shipped OUT_DIR
    python tests/honest_corpus.py made OUT_DIR OUTSIDE_DIR
    python tests/honest_corpus.py reference SPEC.json

``shipped`` saves this Blender's default scene (as File > New > General and then Save would) and copies
each app template's ``startup.blend`` from this Blender's own install, byte for byte: files nobody here
wrote. ``made`` starts from the default scene and does what users do every day: paste an object through
the copy buffer, append a material from an asset library, link an essentials node group, keep an image
whose path exists nowhere, keep an unused image pointing outside the job, read a file shipped beside
the scene with an import node, and render with no camera through the sequencer or the compositor.
Files the job must not need (the asset library, the image outside) go into OUTSIDE_DIR.

``reference`` renders each file of SPEC the trusting way (no checks), with the settings the worker
applies, so a test can compare the worker's PNG with what Blender itself makes; a file Blender cannot
render gets Blender's own error instead. Every mode prints one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from mathutils import Matrix

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.blender_output import stdout_to_stderr

# Where a path of the "missing image" case points: a creator's own disk, absent from every worker.
NOWHERE = "/Users/creator/Projects/textures/weathered_wood.png"
IMPORTED_RGB = (0, 255, 255)  # the colour of what the import node reads, so a test can find it
SEQUENCER_RGB = (1.0, 0.5, 0.0)
COMPOSITOR_RGB = (0.0, 0.3, 1.0)


def _args() -> list[str]:
    return sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]


def _version() -> str:
    return "{}.{}".format(*bpy.app.version[:2])


def _template_folders() -> list[Path]:
    folders = []
    for kind in ("LOCAL", "SYSTEM"):
        base = bpy.utils.resource_path(kind)
        if base:
            folders.append(Path(base) / "scripts" / "startup" / "bl_app_templates_system")
    return [f for f in folders if f.is_dir()]


# --- shipped --------------------------------------------------------------------------------------------


def shipped(out_dir: Path) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    version = _version()
    files = []
    default = out_dir / f"default-{version}.blend"
    bpy.ops.wm.read_factory_settings(use_empty=False)
    bpy.ops.wm.save_as_mainfile(filepath=str(default))
    files.append({"name": f"default scene saved by {version}", "asset": str(default)})
    for folder in _template_folders():
        for startup in sorted(folder.glob("*/startup.blend")):
            copy = out_dir / f"template-{startup.parent.name}-{version}.blend"
            shutil.copyfile(startup, copy)
            name = f"{startup.parent.name} template of {version}"
            files.append({"name": name, "asset": str(copy)})
    return files


# --- made -----------------------------------------------------------------------------------------------


def _default_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=False)
    return bpy.context.scene


def _save(out: Path, *, relative: bool = True) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.filepaths.save_version = 0
    bpy.ops.wm.save_as_mainfile(filepath=str(out), relative_remap=relative)
    return out


def _emission(name: str, rgb: tuple[float, float, float]) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (*rgb, 1.0)
    output = nodes.new("ShaderNodeOutputMaterial")
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def pasted(out_dir: Path, outside: Path) -> dict[str, Any]:
    """Ctrl+C, Ctrl+V: the pasted copy's mesh and material keep a weak reference to the copy buffer."""
    _default_scene()
    cube = bpy.data.objects["Cube"]
    with bpy.context.temp_override(selected_objects=[cube], active_object=cube, object=cube):
        bpy.ops.view3d.copybuffer()
    bpy.ops.view3d.pastebuffer()
    copy = next(o for o in bpy.data.objects if o.name.startswith("Cube."))
    copy.location = (0.0, 0.0, 2.4)
    weak = [i.library_weak_reference.filepath for i in (copy.data, *copy.data.materials)]
    return {"asset": str(_save(out_dir / "pasted.blend")), "weak_references": weak}


def asset_material(out_dir: Path, outside: Path) -> dict[str, Any]:
    """A material appended from the creator's asset library (a file outside the job, which exists here)."""
    _default_scene()
    library = outside / "asset-library" / "materials.blend"
    library.parent.mkdir(parents=True, exist_ok=True)
    material = _emission("Warm Glow", (1.0, 0.35, 0.05))
    material.asset_mark()
    bpy.data.libraries.write(str(library), {material}, fake_user=True)
    bpy.data.materials.remove(material)
    bpy.ops.wm.append(
        filepath=f"{library}/Material/Warm Glow", directory=f"{library}/Material/", filename="Warm Glow"
    )
    appended = bpy.data.materials["Warm Glow"]
    bpy.data.objects["Cube"].material_slots[0].material = appended
    weak = [appended.library_weak_reference.filepath]
    return {"asset": str(_save(out_dir / "asset-material.blend")), "weak_references": weak}


def essentials_link(out_dir: Path, outside: Path) -> dict[str, Any]:
    """The Smooth by Angle node group linked (not appended) from Blender's own essentials library."""
    _default_scene()
    datafiles = Path(bpy.utils.system_resource("DATAFILES"))
    essentials = datafiles / "assets" / "geometry_nodes" / "smooth_by_angle.blend"
    with bpy.data.libraries.load(str(essentials), link=True) as (_source, target):
        target.node_groups = ["Smooth by Angle"]
    modifier = bpy.data.objects["Cube"].modifiers.new("Smooth by Angle", "NODES")
    modifier.node_group = target.node_groups[0]
    asset = _save(out_dir / "essentials-link.blend", relative=False)
    return {"asset": str(asset), "library": str(essentials)}


def missing_image(out_dir: Path, outside: Path) -> dict[str, Any]:
    """A texture by an absolute path on the creator's computer, which exists on no worker."""
    _default_scene()
    image = bpy.data.images.new("weathered_wood.png", 8, 8)
    image.source = "FILE"
    image.filepath = NOWHERE
    tree = bpy.data.materials["Material"].node_tree
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    return {"asset": str(_save(out_dir / "missing-image.blend", relative=False)), "missing": NOWHERE}


def unused_image(out_dir: Path, outside: Path) -> dict[str, Any]:
    """An image kept with a fake user (no material uses it) whose file is outside the job, and exists."""
    _default_scene()
    picture = outside / "reference-photo.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    scratch = bpy.data.images.new("reference-photo.png", 8, 8)
    scratch.filepath_raw = str(picture)
    scratch.file_format = "PNG"
    scratch.save()
    bpy.data.images.remove(scratch)
    image = bpy.data.images.load(str(picture))
    image.use_fake_user = True
    return {"asset": str(_save(out_dir / "unused-image.blend", relative=False)), "outside": str(picture)}


OBJ_QUAD = "v -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\nf 1 2 3 4\n"


def import_in_zip(out_dir: Path, outside: Path) -> dict[str, Any]:
    """A zip of the scene and ``data/panel.obj``; an Import OBJ node reads ``//data/panel.obj``."""
    scene = _default_scene()
    folder = out_dir / "import-in-zip"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "panel.obj").write_text(OBJ_QUAD)
    tree = bpy.data.node_groups.new("Imported Panel", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    importer = tree.nodes.new("GeometryNodeImportOBJ")
    importer.inputs["Path"].default_value = "//data/panel.obj"
    paint = tree.nodes.new("GeometryNodeSetMaterial")
    paint.inputs["Material"].default_value = _emission("Imported", tuple(c / 255 for c in IMPORTED_RGB))
    output = tree.nodes.new("NodeGroupOutput")
    tree.links.new(importer.outputs[0], paint.inputs["Geometry"])
    tree.links.new(paint.outputs["Geometry"], output.inputs[0])
    mesh = bpy.data.meshes.new("Panel")
    holder = bpy.data.objects.new("Panel", mesh)
    scene.collection.objects.link(holder)
    holder.modifiers.new("Import", "NODES").node_group = tree
    camera = scene.camera  # just in front of the camera, filling the lower middle of its view
    holder.matrix_world = (
        camera.matrix_world @ Matrix.Translation((0.0, -0.35, -3.0)) @ Matrix.Diagonal((0.5, 0.5, 0.5, 1.0))
    )
    blend = _save(folder / "scene.blend")
    asset = out_dir / "import-in-zip.zip"
    with zipfile.ZipFile(asset, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(blend, "scene.blend")
        archive.write(folder / "data" / "panel.obj", "data/panel.obj")
    return {"asset": str(asset), "scene": str(blend), "expect_rgb": list(IMPORTED_RGB)}


def sequencer_only(out_dir: Path, outside: Path) -> dict[str, Any]:
    """No camera; the sequencer's colour strip is the picture (an editing project)."""
    scene = _default_scene()
    bpy.data.objects.remove(bpy.data.objects["Camera"])
    editor = scene.sequence_editor_create()
    strips = getattr(editor, "strips", None) or editor.sequences
    strip = strips.new_effect("Orange", "COLOR", 1, frame_start=1, frame_end=20)
    strip.color = SEQUENCER_RGB
    return {"asset": str(_save(out_dir / "sequencer-only.blend"))}


def compositor_only(out_dir: Path, outside: Path) -> dict[str, Any]:
    """No camera; the compositor makes the picture from an RGB node alone (4.x compositor API)."""
    scene = _default_scene()
    bpy.data.objects.remove(bpy.data.objects["Camera"])
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    colour = tree.nodes.new("CompositorNodeRGB")
    colour.outputs[0].default_value = (*COMPOSITOR_RGB, 1.0)
    tree.links.new(colour.outputs[0], tree.nodes.new("CompositorNodeComposite").inputs[0])
    return {"asset": str(_save(out_dir / "compositor-only.blend"))}


MADE: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "object pasted through the copy buffer": pasted,
    "material appended from an asset library": asset_material,
    "essentials node group linked": essentials_link,
    "image whose absolute path exists nowhere": missing_image,
    "unused image with an outside path": unused_image,
    "import node reading a file in the job's zip": import_in_zip,
    "no camera, the sequencer makes the image": sequencer_only,
    "no camera, the compositor makes the image": compositor_only,
}


def made(out_dir: Path, outside: Path) -> list[dict[str, Any]]:
    files = []
    for name, build in MADE.items():
        files.append({"name": name, **build(out_dir, outside)})
    return files


# --- reference ------------------------------------------------------------------------------------------


def reference(spec_path: Path) -> list[dict[str, Any]]:
    """Renders each file as plain Blender would with the job's settings: EEVEE, a resolution share, samples.

    SPEC is ``{"files": [{"scene": path, "png": path}], "resolution_percentage": N, "samples": N}``.
    """
    spec = json.loads(spec_path.read_text())
    engine = "BLENDER_EEVEE_NEXT" if (4, 2, 0) <= bpy.app.version < (5, 0, 0) else "BLENDER_EEVEE"
    results = []
    for entry in spec["files"]:
        try:
            bpy.ops.wm.open_mainfile(filepath=entry["scene"], load_ui=False, use_scripts=False)
            scene = bpy.context.scene
            scene.render.engine = engine
            scene.render.resolution_percentage = spec["resolution_percentage"]
            scene.eevee.taa_render_samples = spec["samples"]
            scene.render.image_settings.file_format = "PNG"
            scene.render.image_settings.color_mode = "RGBA"
            bpy.ops.render.render()
            bpy.data.images["Render Result"].save_render(filepath=entry["png"], scene=scene)
            results.append({"scene": entry["scene"], "png": entry["png"]})
        except RuntimeError as exc:
            results.append({"scene": entry["scene"], "error": str(exc).strip()})
    return results


def main() -> None:
    mode, *args = _args() or [""]
    with stdout_to_stderr():
        if mode == "shipped" and len(args) == 1:
            result: Any = shipped(Path(args[0]).resolve())
        elif mode == "made" and len(args) == 2:
            result = made(Path(args[0]).resolve(), Path(args[1]).resolve())
        elif mode == "reference" and len(args) == 1:
            result = reference(Path(args[0]))
        else:
            raise SystemExit(
                "usage: honest_corpus.py shipped OUT_DIR | made OUT_DIR OUTSIDE_DIR | reference SPEC"
            )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # the bpy module can hang in its exit-time cleanup; everything is written by now
