"""The only code that runs inside the rendering Blender: open one file, render one frame, report.

Started by the worker as ``blender -b --factory-startup --disable-autoexec FILE --python render_child.py
-- SPEC`` or, with the ``bpy`` module, ``python render_child.py SPEC``. ``SPEC`` is a JSON file in the
job's folder (the blend path, the output PNG, the job's settings and a per-job token). Progress and the
result go to stdout as ``@@VERIFRAME:<token> {json}`` lines; the token keeps a scene from forging them
through names Blender echoes.

The scene comes from a stranger, so before rendering this script checks it (``scene_problems``) and
rejects it, naming what it found, when it needs Python to render as made (registered text blocks,
Python drivers, Freestyle style modules, OSL script nodes), names any file outside the job folder
(images, libraries, caches, volumes, bakes, ...), or exceeds a cap (output pixels, samples). What it
can make harmless it does: File Output nodes are muted and ``render.filepath`` is replaced.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from typing import Any

VARYING_METADATA = (
    "use_stamp_date",
    "use_stamp_time",
    "use_stamp_render_time",
    "use_stamp_filename",
    "use_stamp_hostname",
    "use_stamp_memory",
)
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


# -- checks ---------------------------------------------------------------------------------------------
def all_ids(bpy: Any) -> list[Any]:
    """Every datablock of the file and its libraries, plus the node trees embedded in them."""
    found: list[Any] = []
    for attr in dir(bpy.data):
        collection = getattr(bpy.data, attr, None)
        if not isinstance(collection, bpy.types.bpy_prop_collection):
            continue
        for item in collection:
            if isinstance(item, bpy.types.ID):
                found.append(item)
                tree = getattr(item, "node_tree", None)
                if isinstance(tree, bpy.types.ID):
                    found.append(tree)
    return found


def python_uses(bpy: Any, ids: list[Any]) -> list[str]:
    """Everything in the file that would run Python (or OSL) if allowed: none of it is, so it is refused.

    Autoexec is off, so Blender itself skips registered text blocks and Python drivers; the scene
    would then render differently from what its creator made, so it is rejected rather than rendered
    wrong. Freestyle style modules and OSL scripts are not covered by autoexec at all.
    """
    found = [
        f"text block '{text.name}' is registered to run as Python when the file opens"
        for text in bpy.data.texts
        if text.use_module
    ]
    for owner in ids:
        animation = getattr(owner, "animation_data", None)
        for curve in getattr(animation, "drivers", None) or []:
            driver = curve.driver
            if driver.type == "SCRIPTED" and not driver.is_simple_expression:
                found.append(
                    f"the driver on {owner.name}.{curve.data_path}[{curve.array_index}] needs Python "
                    f"({driver.expression[:80]!r})"
                )
        for node in getattr(owner, "nodes", None) or []:
            if node.bl_idname == "ShaderNodeScript":
                found.append(f"node '{node.name}' in {owner.name} is an OSL script")
    for scene in bpy.data.scenes:
        if not scene.render.use_freestyle:
            continue
        for layer in scene.view_layers:
            settings = layer.freestyle_settings
            if layer.use_freestyle and settings.mode == "SCRIPT":
                names = [m.script.name for m in settings.modules if m.script is not None] or ["(none)"]
                found.append(
                    f"Freestyle in view layer '{layer.name}' runs Python style modules ({', '.join(names)})"
                )
    return found


def referenced_paths(bpy: Any, ids: list[Any]) -> list[str]:
    """Every file or folder the render may read or write, as absolute paths.

    ``bpy.utils.blend_paths`` is Blender's own list (images, movies, sounds, fonts, libraries, caches,
    volumes, IES, ocean and fluid caches, sequencer strips). Its ``packed`` flag is documented as "skip
    packed data" but does the opposite (seen in 4.5): ``packed=False`` leaves packed files out. It
    misses point caches with an external path and geometry-node bake folders, which are added here.
    Text blocks' files are left out: a render never reads them.
    """
    text_files = {bpy.path.abspath(t.filepath) for t in bpy.data.texts if t.filepath}
    listed = bpy.utils.blend_paths(absolute=True, packed=False, local=False)
    paths = [p for p in listed if p not in text_files]
    for owner in ids:
        caches = [getattr(owner, "point_cache", None)]
        for modifier in getattr(owner, "modifiers", None) or []:
            caches.append(getattr(modifier, "point_cache", None))
            for settings in ("domain_settings", "canvas_settings"):
                caches.append(getattr(getattr(modifier, settings, None), "point_cache", None))
            if modifier.type == "NODES":
                paths.append(bpy.path.abspath(modifier.bake_directory or "//", library=owner.library))
                for bake in getattr(modifier, "bakes", None) or []:
                    if getattr(bake, "use_custom_path", False):
                        paths.append(bpy.path.abspath(bake.directory, library=owner.library))
        for system in getattr(owner, "particle_systems", None) or []:
            caches.append(system.point_cache)
        rigid = getattr(getattr(owner, "rigidbody_world", None), "point_cache", None)
        caches.append(rigid)
        for cache in caches:
            if cache is not None and cache.use_external:
                paths.append(bpy.path.abspath(cache.filepath, library=owner.library))
    return paths


def outside_paths(paths: list[str], job_root: str) -> list[str]:
    """The paths that resolve (symlinks followed, relative to the job folder) outside ``job_root``."""
    root = os.path.realpath(job_root)
    outside = []
    for path in dict.fromkeys(paths):
        real = os.path.realpath(os.path.join(job_root, path))
        if os.path.commonpath([root, real]) != root:
            outside.append(path)
    return outside


def cap_problems(scene: Any, engine: str, limits: dict[str, Any]) -> list[str]:
    width = scene.render.resolution_x * scene.render.resolution_percentage // 100
    height = scene.render.resolution_y * scene.render.resolution_percentage // 100
    found = []
    megapixels = width * height / 1e6
    if megapixels > limits["max_output_megapixels"]:
        found.append(
            f"the output would be {width}x{height} ({megapixels:.1f} MP); this worker renders at most "
            f"{limits['max_output_megapixels']:g} MP (MAX_OUTPUT_MEGAPIXELS)"
        )
    if engine == "CYCLES":
        samples = scene.cycles.samples
    elif engine.startswith("BLENDER_EEVEE"):
        samples = scene.eevee.taa_render_samples
    else:
        samples = 0
    if samples > limits["max_samples"]:
        found.append(
            f"the scene asks for {samples} samples; this worker renders at most {limits['max_samples']} "
            "(MAX_SAMPLES)"
        )
    return found


def scene_problems(bpy: Any, scene: Any, engine: str, spec: dict[str, Any]) -> list[str]:
    ids = all_ids(bpy)
    found = python_uses(bpy, ids)
    for path in outside_paths(referenced_paths(bpy, ids), spec["job_root"]):
        found.append(f"it names a file outside the job folder: {path} (pack it into the .blend)")
    return found + cap_problems(scene, engine, spec["limits"])


# -- render -------------------------------------------------------------------------------------------
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

    problems = scene_problems(bpy, scene, engine, spec)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        reporter.emit("rejected", message=shown, problems=problems)
        return

    out_dir = os.path.dirname(spec["output"])
    original_filepath = scene.render.filepath
    scene.render.filepath = out_dir + os.sep
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    bpy.context.preferences.filepaths.temporary_directory = spec["tmp_dir"]
    for field in VARYING_METADATA:
        # The PNG's metadata would carry this machine's name, paths and clock: leaks, and a different
        # CID for every render of the same frame (a resumed job must re-render to the same bytes).
        if hasattr(scene.render, field):
            setattr(scene.render, field, False)
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
        replaced_filepath=original_filepath,
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
