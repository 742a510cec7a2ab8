"""Writes the sample job scene: a red cube on a grey floor under a blue sky, seen from a camera.

Run with a Python that has ``bpy``: ``python -m devnet.sample_scene OUT.blend [--size 96x72]``. The colours
are chosen so a test can tell the scene was really rendered: the cube's red fills the frame's centre,
and the sky's blue fills its top corners.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

log = logging.getLogger("devnet.scene")

CUBE_RGB = (0.8, 0.05, 0.05)
SKY_RGB = (0.05, 0.15, 0.6)


def build_scene(out: Path, width: int, height: int, samples: int) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene

    red = bpy.data.materials.new("CubeRed")
    red.diffuse_color = (*CUBE_RGB, 1.0)
    red.use_nodes = True
    red.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*CUBE_RGB, 1.0)
    grey = bpy.data.materials.new("FloorGrey")
    grey.use_nodes = True
    grey.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.4, 0.4, 0.4, 1.0)

    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0, 0, 1))
    bpy.context.object.data.materials.append(red)
    bpy.ops.mesh.primitive_plane_add(size=40.0, location=(0, 0, 0))
    bpy.context.object.data.materials.append(grey)

    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
    bpy.context.object.data.energy = 4.0
    bpy.context.object.rotation_euler = (math.radians(40), 0, math.radians(30))

    bpy.ops.object.camera_add(location=(0, -9, 3.6), rotation=(math.radians(78), 0, 0))
    scene.camera = bpy.context.object

    world = bpy.data.worlds.new("Sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (*SKY_RGB, 1.0)
    scene.world = world

    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.eevee.taa_render_samples = samples
    scene.frame_start = 1
    scene.frame_end = 1
    out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(out.resolve()), compress=False)
    log.info("sample scene written to %s (%dx%d, %d samples)", out, width, height, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="96x72", help="WIDTHxHEIGHT in pixels")
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_scene(args.out, width, height, args.samples)


if __name__ == "__main__":
    main()
