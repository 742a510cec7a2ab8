"""The only code that runs inside the rendering Blender: open one file, render one frame, report.

Started by the worker as ``blender -b --factory-startup --disable-autoexec FILE --python render_child.py
-- SPEC`` or, with the ``bpy`` module, ``python render_child.py SPEC``. ``SPEC`` is a JSON file in the
job's folder (the blend path, the output PNG, the job's settings and a per-job token). Progress and the
result go to stdout as ``@@VERIFRAME:<token> {json}`` lines; the token keeps a scene from forging them
through names Blender echoes. The scene's own Python never runs (scripts are disabled on open) and
file-output nodes are muted, so nothing is written outside the job's folder.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from typing import Any

STATS_PATTERNS = (
    re.compile(r"Rendering (\d+) / (\d+) samples"),  # EEVEE
    re.compile(r"Sample (\d+)/(\d+)"),  # Cycles
)


class Reporter:
    def __init__(self, token: str) -> None:
        self.token = token
        self.last_fraction = -1.0

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(f"@@VERIFRAME:{self.token} {json.dumps({'event': event, **fields})}\n")
        sys.stdout.flush()

    def on_stats(self, stats: str, *_: Any) -> None:
        # Blender passes the stats text (and, in some versions, a second argument).
        for pattern in STATS_PATTERNS:
            match = pattern.search(str(stats))
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                fraction = done / total if total else 0.0
                if fraction > self.last_fraction:
                    self.last_fraction = fraction
                    self.emit("progress", fraction=round(fraction, 4), samples_done=done, samples_total=total)
                return


def spec_path_from_argv(argv: list[str]) -> str:
    args = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
    if not args:
        raise SystemExit("render_child.py: missing SPEC argument")
    return args[-1]


def engine_id(family: str, version: tuple[int, int, int]) -> str:
    """EEVEE's id changed twice: BLENDER_EEVEE (<4.2), BLENDER_EEVEE_NEXT (4.2-4.5), BLENDER_EEVEE (5.0+)."""
    if family == "CYCLES":
        return "CYCLES"
    if family == "WORKBENCH":
        return "BLENDER_WORKBENCH"
    return "BLENDER_EEVEE_NEXT" if (4, 2, 0) <= version < (5, 0, 0) else "BLENDER_EEVEE"


def mute_file_outputs(bpy: Any) -> int:
    """Compositor File Output nodes write wherever the scene says: mute every one of them."""
    trees = list(bpy.data.node_groups)
    for scene in bpy.data.scenes:
        tree = getattr(scene, "node_tree", None) or getattr(scene, "compositing_node_group", None)
        if tree is not None:
            trees.append(tree)
    muted = 0
    for tree in trees:
        for node in getattr(tree, "nodes", []):
            if node.bl_idname == "CompositorNodeOutputFile" and not node.mute:
                node.mute = True
                muted += 1
    return muted


def render(spec: dict[str, Any], reporter: Reporter) -> None:
    import bpy

    blend = spec["blend"]
    if os.path.realpath(bpy.data.filepath or "") != os.path.realpath(blend):
        # bpy module mode, or a Blender binary that failed to open FILE: opening here gives Blender's message.
        bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
    reporter.emit("opened", blender=bpy.app.version_string, file=os.path.basename(blend))

    settings = spec["settings"]
    scene = bpy.context.scene
    if scene.camera is None:
        raise RuntimeError("the scene has no active camera, so there is nothing to render")

    engine = engine_id(settings.get("engine", "EEVEE"), tuple(bpy.app.version))
    if engine == "CYCLES":
        import addon_utils

        addon_utils.enable("cycles", default_set=True)
    scene.render.engine = engine
    if settings.get("resolution_percentage"):
        scene.render.resolution_percentage = int(settings["resolution_percentage"])
    samples = settings.get("samples")
    if samples:
        if engine == "CYCLES":
            scene.cycles.samples = int(samples)
        elif engine.startswith("BLENDER_EEVEE"):
            scene.eevee.taa_render_samples = int(samples)
    # The render evaluates the scene at this frame itself; frame_set() would evaluate it once more first.
    scene.frame_current = int(settings.get("frame", 1))

    out_dir = os.path.dirname(spec["output"])
    scene.render.filepath = out_dir + os.sep
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    bpy.context.preferences.filepaths.temporary_directory = spec["tmp_dir"]
    muted = mute_file_outputs(bpy)

    width = scene.render.resolution_x * scene.render.resolution_percentage // 100
    height = scene.render.resolution_y * scene.render.resolution_percentage // 100
    reporter.emit(
        "rendering",
        engine=engine,
        frame=scene.frame_current,
        width=width,
        height=height,
        muted_file_outputs=muted,
    )
    bpy.app.handlers.render_stats.append(reporter.on_stats)
    bpy.ops.render.render(write_still=False)
    bpy.data.images["Render Result"].save_render(filepath=spec["output"], scene=scene)
    reporter.emit("done", output=spec["output"], width=width, height=height, engine=engine)


def main(argv: list[str]) -> int:
    with open(spec_path_from_argv(argv), encoding="utf-8") as file:
        spec = json.load(file)
    reporter = Reporter(spec["token"])
    try:
        render(spec, reporter)
    except Exception as exc:  # report every failure to the worker in Blender's own words
        message = str(exc).strip() or type(exc).__name__
        reporter.emit("error", message=message, trace=traceback.format_exc(limit=3))
        return 2
    return 0


if __name__ == "__main__":
    exit_code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip Blender's exit-time cleanup: the bpy module can hang in it (seen after compositor use), and
    # everything the worker needs is written and reported by now.
    os._exit(exit_code)
