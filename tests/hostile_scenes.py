"""Writes hostile .blend files for the render-safety tests; run with a Python that has ``bpy``.

    python tests/hostile_scenes.py evil OUT.blend MARKER_DIR OUTSIDE_DIR
    python tests/hostile_scenes.py no-camera OUT.blend

``evil`` starts from the sample scene and adds three ways a scene could act outside its job folder: a
text block registered to run on load, a driver whose expression calls Python, and a compositor File
Output node aimed at OUTSIDE_DIR. Each of the first two writes a file into MARKER_DIR if it ever runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devnet.sample_scene import build_scene


def evil(out: Path, marker_dir: Path, outside_dir: Path) -> None:
    build_scene(out, 32, 24, 1)
    text = bpy.data.texts.new("autorun.py")
    text.write(f"open({str(marker_dir / 'text_block_ran')!r}, 'w').write('ran')\n")
    text.use_module = True

    cube = bpy.data.objects["Cube"]
    driver = cube.driver_add("location", 0).driver
    driver.type = "SCRIPTED"
    driver.expression = (
        f"__import__('pathlib').Path({str(marker_dir / 'driver_ran')!r}).write_text('ran') * 0"
    )

    scene = bpy.context.scene
    scene.use_nodes = True
    tree = scene.node_tree
    layers = tree.nodes.get("Render Layers") or tree.nodes.new("CompositorNodeRLayers")
    file_out = tree.nodes.new("CompositorNodeOutputFile")
    file_out.base_path = str(outside_dir) + "/"
    tree.links.new(layers.outputs["Image"], file_out.inputs[0])
    bpy.ops.wm.save_as_mainfile(filepath=str(out), compress=False)


def no_camera(out: Path) -> None:
    build_scene(out, 32, 24, 1)
    bpy.data.objects.remove(bpy.data.objects["Camera"])
    bpy.context.scene.camera = None
    bpy.ops.wm.save_as_mainfile(filepath=str(out), compress=False)


if __name__ == "__main__":
    kind, *paths = sys.argv[1:]
    {"evil": evil, "no-camera": no_camera}[kind](*(Path(p) for p in paths))
    sys.stdout.flush()
    # The bpy module can hang in its exit-time cleanup after compositor use; the file is saved already.
    os._exit(0)
