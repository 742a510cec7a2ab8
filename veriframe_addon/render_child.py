"""The only code that runs inside the rendering Blender: open one file, render one frame, report.

Started by the worker as ``blender -b --factory-startup --disable-autoexec FILE --python render_child.py
-- SPEC`` or, with the ``bpy`` module, ``python render_child.py SPEC``. ``SPEC`` is a JSON file in the
job's folder (the blend path, the output PNG, the job's settings and a per-job token). Progress and the
result go to stdout as ``@@VERIFRAME:<token> {json}`` lines; the token keeps a scene from forging them
through names Blender echoes.

As a warm standby (``-- --standby TOKEN ENGINE``, no FILE) it starts before its job exists: it renders
a tiny frame of Blender's own default scene (that sets up the GPU context and compiles the common
shaders, never with a stranger's data), says ``parked``, and waits for one line on stdin, the path of
its job's SPEC. Then it opens that one file and goes on exactly as above; it renders one job and exits.

The scene comes from a stranger, so before rendering this script checks it (``scene_problems``) and
rejects it, naming what it found, when it needs Python to render as made (registered text blocks,
Python drivers, Freestyle style modules, OSL script nodes), would read a file outside the job folder
that exists here (``scene_reads``: the images, libraries, caches, volumes, bakes and node paths that
the rendered scene really uses), reads a path that nodes compute, or exceeds a cap (output pixels,
samples). A file it names that does not exist here is rendered without, as Blender does, and reported.
What it can make harmless it does: File Output nodes are muted and ``render.filepath`` is replaced.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
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


# -- what the render reads ------------------------------------------------------------------------------
# Data-blocks a render never reads through: the interface, and the painting tools' brushes and palettes
# (tool settings link Blender's essentials brushes into nearly every file saved by 4.3 or newer).
NOT_RENDERED = ("Brush", "Palette", "WorkSpace", "Screen", "WindowManager")
# String properties and node sockets of these subtypes name a file or folder that Blender opens.
PATH_SUBTYPES = ("FILE_PATH", "DIR_PATH")
# Placeholders Blender fills in when it opens the file: UDIM tiles, and frame numbers.
PATH_TOKENS = re.compile(r"<UDIM>|<UVTILE>|#+")
# Data-block types that are a file on disk (unless packed), and how messages call them.
FILE_DATABLOCKS = {
    "IMAGE": "image",
    "MOVIECLIP": "movie clip",
    "SOUND": "sound",
    "FONT": "font",
    "CACHEFILE": "cache file",
    "VOLUME": "volume",
    "LIBRARY": "library",
}


@dataclass(frozen=True)
class FileRead:
    """A file or folder the render may open, and who in the scene names it (for messages)."""

    path: str  # as the scene stores it
    absolute: str  # resolved as Blender resolves it: ``//`` from the owner's .blend, else the job folder
    owner: str  # e.g. "image 'Wood'", "node 'Import OBJ' in node group 'Rocks'"
    writes: bool = False  # the render may write there (a simulation cache): it must be inside the job
    sequence: bool = False  # one frame of a numbered sequence: its siblings count as the same read
    remedy: str = "pack it into the .blend"  # what the creator can do about a refusal
    # A data-block's file that is absent here is rendered without (as Blender does); a node's path
    # outside the job is refused either way (see ``judge_reads``).
    absent_is_harmless: bool = True


@dataclass
class SceneReads:
    """What ``scene_reads`` found: the reads to judge, paths that cannot be judged, and paths it saw."""

    reads: list[FileRead] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)  # node paths computed at evaluation: refused
    seen: set[str] = field(default_factory=set)  # every path found, read or not (see ``unexplained``)


def _slashes(path: str) -> str:
    return path.replace("\\", "/") if os.sep == "/" else path


def _absolute(bpy: Any, path: str, library: Any) -> str:
    """``path`` as Blender opens it: ``//`` starts at the folder of the .blend that stores it (a
    library's for linked data; a nested library's path is relative to its parent library); anything
    else is taken as it is, so a relative one starts at the render's working folder, the job folder."""
    path = _slashes(path)
    if not path.startswith("//"):
        return path
    owner_file = _library_file(bpy, library) if library is not None else bpy.data.filepath
    return os.path.normpath(os.path.join(os.path.dirname(owner_file), path[2:]))


def _library_file(bpy: Any, library: Any) -> str:
    return _absolute(bpy, library.filepath, getattr(library, "parent", None))


def rendered_ids(bpy: Any, scene: Any) -> set[Any]:
    """Every data-block the render of ``scene`` can reach: what it uses, what those use, and so on.

    ``bpy.data.user_map`` lists every reference between data-blocks, also those that hold no user
    (driver targets, parents), so nothing the render evaluates is left out; the interface and the
    painting tools are not followed. A linked data-block brings its library (and that one's parent).
    """
    uses: dict[Any, set[Any]] = {}
    for used, users in bpy.data.user_map().items():
        for user in users:
            uses.setdefault(user, set()).add(used)
    reached: set[Any] = set()
    todo = [scene]
    while todo:
        item = todo.pop()
        if item in reached or type(item).__name__ in NOT_RENDERED:
            continue
        reached.add(item)
        todo.extend(uses.get(item, ()))
    for item in list(reached):
        library = getattr(item, "library", None)
        while library is not None and library not in reached:
            reached.add(library)
            library = getattr(library, "parent", None)
    return reached


def _is_packed(item: Any) -> bool:
    return getattr(item, "packed_file", None) is not None or len(getattr(item, "packed_files", ()) or ()) > 0


def _datablock_reads(bpy: Any, item: Any) -> list[FileRead]:
    """The file that a data-block of a file type (``FILE_DATABLOCKS``) stands for."""
    kind = item.id_type
    if kind == "IMAGE" and item.source not in ("FILE", "SEQUENCE", "MOVIE", "TILED"):
        return []  # generated, viewer and render-result images read no file
    if kind == "FONT" and item.filepath == "<builtin>":
        return []
    library = item.parent if kind == "LIBRARY" else item.library
    what = f"{FILE_DATABLOCKS[kind]} '{item.name}'"
    sequence = getattr(item, "source", "") == "SEQUENCE" or bool(getattr(item, "is_sequence", False))
    paths = [item.filepath] + [layer.filepath for layer in getattr(item, "layers", None) or ()]
    return [FileRead(p, _absolute(bpy, p, library), what, sequence=sequence) for p in paths if p]


def _path_properties(struct: Any) -> list[str]:
    """The non-empty string properties of ``struct`` whose subtype says they name a file or folder."""
    found = []
    for prop in struct.bl_rna.properties:
        if prop.type == "STRING" and prop.subtype in PATH_SUBTYPES:
            value = getattr(struct, prop.identifier, "")
            if value:
                found.append(value)
    return found


def _object_reads(bpy: Any, owner: Any) -> list[FileRead]:
    """Caches and bakes of an object's modifiers, particles and simulations.

    A modifier's own path properties (mesh cache, ocean cache, bake folder) are found by subtype; a
    fluid domain's cache folder is written while a replayed simulation runs, so it must be inside the
    job even when it does not exist yet.
    """
    reads: list[FileRead] = []

    def add(path: str, what: str, *, writes: bool = False) -> None:
        if path:
            reads.append(FileRead(path, _absolute(bpy, path, owner.library), what, writes))

    caches = []
    for modifier in getattr(owner, "modifiers", None) or ():
        what = f"modifier '{modifier.name}' of object '{owner.name}'"
        for path in _path_properties(modifier):
            add(path, what)
        for bake in getattr(modifier, "bakes", None) or ():
            if getattr(bake, "use_custom_path", False):
                add(bake.directory, what)
        domain = getattr(modifier, "domain_settings", None)
        if domain is not None:
            add(domain.cache_directory, what, writes=True)
            caches.append((getattr(domain, "point_cache", None), what))
        canvas = getattr(modifier, "canvas_settings", None)
        for surface in getattr(canvas, "canvas_surfaces", None) or ():
            caches.append((surface.point_cache, what))
        caches.append((getattr(modifier, "point_cache", None), what))
    for system in getattr(owner, "particle_systems", None) or ():
        caches.append((system.point_cache, f"particle system '{system.name}' of object '{owner.name}'"))
    for cache, what in caches:
        if cache is not None and cache.use_external:
            add(cache.filepath, what)
    return reads


def _scene_reads(bpy: Any, scene: Any) -> list[FileRead]:
    """The sequencer's image, movie and proxy files, and the rigid-body cache, of one scene."""
    reads: list[FileRead] = []
    editor = scene.sequence_editor
    strips = getattr(editor, "strips_all", None) or getattr(editor, "sequences_all", None) or ()
    for strip in strips:
        what = f"sequencer strip '{strip.name}' in scene '{scene.name}'"
        sources = [strip]
        if getattr(strip, "use_proxy", False) and getattr(strip, "proxy", None) is not None:
            sources.append(strip.proxy)
        for source in sources:
            for attr in ("directory", "filepath"):
                path = getattr(source, attr, "")
                if path:
                    reads.append(FileRead(path, _absolute(bpy, path, scene.library), what))
    cache = getattr(getattr(scene, "rigidbody_world", None), "point_cache", None)
    if cache is not None and cache.use_external and cache.filepath:
        what = f"rigid body world of scene '{scene.name}'"
        reads.append(FileRead(cache.filepath, _absolute(bpy, cache.filepath, scene.library), what))
    return reads


def _node_reads(bpy: Any, tree: Any, where: str, owner: Any) -> tuple[list[FileRead], list[str]]:
    """Every file path a node of ``tree`` can read, and the ones that are computed (refused).

    Found by subtype rather than by node type (inputs whose socket is a file path, node properties
    that are paths), so nodes that later Blenders add are covered too. A path socket fed by a link is
    computed while the scene is evaluated, so it cannot be checked before the render.
    """
    library = owner.library
    suffix = f" (linked from {os.path.basename(_library_file(bpy, library))})" if library else ""
    reads: list[FileRead] = []
    computed: list[str] = []
    for node in tree.nodes:
        if node.bl_idname in ("CompositorNodeOutputFile", "ShaderNodeScript"):
            continue  # muted before the render (mute_file_outputs); refused as Python (python_uses)
        what = f"node '{node.name}' in {where}{suffix}"
        paths = _path_properties(node)
        for socket in node.inputs:
            prop = socket.bl_rna.properties.get("default_value")
            if prop is None or prop.type != "STRING" or prop.subtype not in PATH_SUBTYPES:
                continue
            if socket.is_linked:
                computed.append(
                    f"{what} reads a file whose path ('{socket.name}') is computed by other nodes, so it "
                    "cannot be checked before the render (type the path into the node instead)"
                )
            elif socket.default_value:
                paths.append(socket.default_value)
        remedy = "put it in the job's archive and give its path from the .blend's folder as //..."
        reads += [
            FileRead(path, _absolute(bpy, path, library), what, remedy=remedy, absent_is_harmless=False)
            for path in paths
        ]
    return reads, computed


def _reads_of(bpy: Any, item: Any) -> tuple[list[FileRead], list[str]]:
    """What one data-block (with its embedded node tree) would read, and its computed node paths."""
    kind = getattr(item, "id_type", "")
    reads: list[FileRead] = []
    computed: list[str] = []
    if kind in FILE_DATABLOCKS and not _is_packed(item):
        reads += _datablock_reads(bpy, item)
    elif kind == "OBJECT":
        reads += _object_reads(bpy, item)
    elif kind == "SCENE":
        reads += _scene_reads(bpy, item)
    trees = [(item, f"node group '{item.name}'")] if isinstance(item, bpy.types.NodeTree) else []
    embedded = getattr(item, "node_tree", None)  # materials, worlds, lights, textures; a 4.x compositor
    if isinstance(embedded, bpy.types.NodeTree):
        trees.append((embedded, f"{kind.lower().replace('_', ' ')} '{item.name}'"))
    for tree, where in trees:
        tree_reads, tree_computed = _node_reads(bpy, tree, where, item)
        reads += tree_reads
        computed += tree_computed
    return reads, computed


def scene_reads(bpy: Any, scene: Any) -> SceneReads:
    """Every file the render of ``scene`` may open, judged by use, not by mention.

    Read: what the data-blocks the scene reaches (``rendered_ids``) name, unless packed: files, caches
    and bakes, the sequencer's files, every node path. Not read: weak references (where an appended or
    pasted data-block came from), data-blocks the render does not use, packed data, text blocks' files.
    """
    reached = rendered_ids(bpy, scene)
    found = SceneReads()
    for item in all_ids(bpy):
        if getattr(item, "is_embedded_data", False):
            continue  # a node tree inside a material, world, ...: read with its owner
        reads, computed = _reads_of(bpy, item)
        found.seen |= {read.absolute for read in reads}
        if item in reached:
            found.reads += reads
            found.computed += computed
        elif getattr(item, "id_type", "") in FILE_DATABLOCKS:
            found.seen |= {read.absolute for read in _datablock_reads(bpy, item)}  # packed, or unused
        weak = getattr(item, "library_weak_reference", None)
        if weak is not None and weak.filepath:
            found.seen.add(_absolute(bpy, weak.filepath, None))
        if getattr(item, "id_type", "") == "TEXT" and item.filepath:
            found.seen.add(_absolute(bpy, item.filepath, item.library))
    return found


def unexplained(bpy: Any, found: SceneReads) -> list[FileRead]:
    """Paths Blender lists for the file that ``scene_reads`` did not account for (a kind of data it does
    not know): judged as reads, so whatever a later Blender adds is never waved through unchecked."""
    seen = {os.path.normpath(path) for path in found.seen}
    return [
        FileRead(path, path, "a data-block")
        for path in dict.fromkeys(bpy.utils.blend_paths(absolute=True, packed=False, local=False))
        if os.path.normpath(_slashes(path)) not in seen
    ]


def blender_datafiles(bpy: Any) -> list[str]:
    """The render Blender's own bundled data (essentials assets, fonts, colour management): read-only
    files that ship with Blender, which a scene may link for real. The user's config is not in there."""
    folders = {bpy.utils.system_resource("DATAFILES")}
    for kind in ("LOCAL", "SYSTEM"):
        base = bpy.utils.resource_path(kind)
        if base:
            folders.add(os.path.join(base, "datafiles"))
    return sorted({os.path.realpath(folder) for folder in folders if folder and os.path.isdir(folder)})


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([folder, path]) == folder


def _may_exist(path: str, sequence: bool) -> bool:
    """Whether ``path`` exists, or any file it stands for (UDIM tiles, frames of a numbered sequence)."""
    if os.path.lexists(path):
        return True
    plain = glob.escape(path)
    pattern = PATH_TOKENS.sub("*", plain)
    if sequence:
        folder, name = os.path.split(pattern)
        pattern = os.path.join(folder, re.sub(r"\d+(?=\D*$)", "*", name))
    return pattern != plain and bool(glob.glob(pattern))


def judge_reads(
    reads: list[FileRead], job_root: str, blender_files: list[str]
) -> tuple[list[str], list[str]]:
    """The refusals and the missing files among ``reads``.

    Inside the job folder or the render Blender's own data: fine. Outside and present where the render
    runs: refused, since the render would read the operator's file. A data-block's file outside and
    absent (a texture on the creator's other computer; anything outside, inside the sandbox): nothing to
    leak, so the render goes on as Blender's own would and the path is reported missing, as is a missing
    file inside the job. A node's path outside is refused even when absent: import nodes read data the
    creator ships with the scene, and without it the render would silently lack whole objects. A folder
    the render may write to must be inside the job, present or not.
    """
    root = os.path.realpath(job_root)
    problems: list[str] = []
    missing: list[str] = []
    for read in dict.fromkeys(reads):
        shown = os.path.normpath(os.path.join(root, read.absolute))
        real = os.path.realpath(shown)
        if read.writes:
            if not _inside(real, root):
                problems.append(f"{read.owner} would write outside the job folder: {shown}")
        elif _inside(real, root) or any(_inside(real, folder) for folder in blender_files):
            if not _may_exist(real, read.sequence):
                missing.append(f"{shown} ({read.owner})")
        elif not read.absent_is_harmless or _may_exist(real, read.sequence):
            problems.append(f"{read.owner} names a file outside the job folder: {shown} ({read.remedy})")
        else:
            missing.append(f"{shown} ({read.owner})")
    return problems, list(dict.fromkeys(missing))


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


def scene_problems(bpy: Any, scene: Any, engine: str, spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Why the scene must not render (Python, a file outside the job, a cap), and the files it names that
    are missing here (rendered without, as Blender does, and reported)."""
    found = python_uses(bpy, all_ids(bpy))
    reads = scene_reads(bpy, scene)
    refused, missing = judge_reads(
        reads.reads + unexplained(bpy, reads), spec["job_root"], blender_datafiles(bpy)
    )
    return found + reads.computed + refused + cap_problems(scene, engine, spec["limits"]), missing


def render_or_explain(bpy: Any, scene: Any) -> None:
    """Renders the frame; a scene without a camera whose sequencer or compositor makes no image without
    one fails as it does in Blender, in words an operator and a creator understand."""
    try:
        bpy.ops.render.render(write_still=False)
    except RuntimeError as exc:
        said = str(exc).strip().removeprefix("Error: ")
        if scene.camera is None and "camera" in said.lower():
            raise RuntimeError(
                "the scene has no active camera, and neither its sequencer nor its compositor makes an "
                f"image without one, so there is nothing to render (Blender says: {said})"
            ) from None
        raise


# -- render -------------------------------------------------------------------------------------------
def apply_device(bpy: Any, scene: Any, device: dict[str, Any]) -> str:
    """Sets Cycles' device for real, despite factory startup; returns what it renders on, in words.

    ``device`` is the worker's choice: ``{"type": "CPU"}``, or a GPU type and the Cycles ids of exactly
    the GPUs to use. New device entries default to on, so every other one is turned off. A chosen GPU
    this Blender does not see is an error, never a quiet CPU render.
    """
    kind = device.get("type") or "CPU"
    if kind == "CPU":
        scene.cycles.device = "CPU"
        return "CPU"
    prefs = bpy.context.preferences.addons["cycles"].preferences
    prefs.compute_device_type = kind
    prefs.refresh_devices()
    wanted = set(device.get("ids") or ())
    used = []
    for entry in prefs.devices:
        entry.use = entry.id in wanted
        if entry.use:
            used.append(entry.name)
    missing = wanted - {entry.id for entry in prefs.devices if entry.use}
    if missing or not used:
        raise RuntimeError(
            f"Cycles does not see the {kind} device(s) chosen for this render: {sorted(missing)}"
        )
    scene.cycles.device = "GPU"
    return f"{kind} " + ", ".join(used)


def gpu_context() -> str:
    """The GPU and backend of Blender's GPU context (what EEVEE and Workbench render on)."""
    try:
        import gpu

        backend = gpu.platform.backend_type_get() if hasattr(gpu.platform, "backend_type_get") else ""
        return f"{gpu.platform.renderer_get()} ({backend or 'OpenGL'})"
    except Exception as exc:  # no GPU context at all: say so rather than guess
        return f"unknown GPU context ({type(exc).__name__})"


def apply_cpu_budget(scene: Any, cpu: dict[str, Any]) -> None:
    """The operator's thread count (RENDER_THREADS), whatever the scene asks; 0: every core (Blender's
    "auto"), so a scene fixed at one thread cannot slow the node down either."""
    threads = int(cpu.get("threads") or 0)
    if threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = threads
    else:
        scene.render.threads_mode = "AUTO"


def render(spec: dict[str, Any], reporter: Reporter) -> None:
    import bpy

    blend = spec["blend"]
    if os.path.realpath(bpy.data.filepath or "") != os.path.realpath(blend):
        # bpy module mode, or a Blender binary that failed to open FILE: opening here gives Blender's message.
        bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
    reporter.emit("opened", blender=bpy.app.version_string, file=os.path.basename(blend))

    settings = spec["settings"]
    scene = bpy.context.scene

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
    apply_cpu_budget(scene, spec.get("cpu") or {})
    device = apply_device(bpy, scene, spec.get("device") or {}) if engine == "CYCLES" else None

    problems, missing = scene_problems(bpy, scene, engine, spec)
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
    for name in VARYING_METADATA:
        # The PNG's metadata would carry this machine's name, paths and clock: leaks, and a different
        # CID for every render of the same frame (a resumed job must re-render to the same bytes).
        if hasattr(scene.render, name):
            setattr(scene.render, name, False)
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
        missing=missing,
    )
    bpy.app.handlers.render_stats.append(reporter.on_stats)
    render_or_explain(bpy, scene)
    bpy.data.images["Render Result"].save_render(filepath=spec["output"], scene=scene)
    blender = ".".join(str(part) for part in bpy.app.version)  # which Blender really rendered it
    nice = os.nice(0) if hasattr(os, "nice") else None
    reporter.emit(
        "done",
        output=spec["output"],
        width=width,
        height=height,
        engine=engine,
        blender=blender,
        threads=scene.render.threads,  # Blender's own count: the fixed one, or what "auto" found
        nice=nice,
        device=device or gpu_context(),
    )


STANDBY = "--standby"
WARM_SIZE = (32, 24)  # pixels of the warm-up frame: enough to set up the context and compile shaders


def warm_up(family: str) -> None:
    """Renders Blender's own default scene (factory startup: cube, light, camera) at a tiny size with
    ``family``'s engine, into memory only: the first render in a process pays for the GPU context and the
    engine's shaders (0.65 s of a 64x48 Workbench frame, against 0.01 s for a second one)."""
    import bpy

    scene = bpy.context.scene
    engine = engine_id(family, tuple(bpy.app.version))
    if engine == "CYCLES":
        import addon_utils

        addon_utils.enable("cycles", default_set=True)
    scene.render.engine = engine
    scene.render.resolution_x, scene.render.resolution_y = WARM_SIZE
    scene.render.resolution_percentage = 100
    if engine == "CYCLES":
        scene.cycles.samples = 1
    elif engine.startswith("BLENDER_EEVEE"):
        scene.eevee.taa_render_samples = 1
    bpy.ops.render.render(write_still=False)


def job_waiting() -> bool:
    """Whether the job's SPEC line is on stdin already (POSIX; elsewhere this says no)."""
    if os.name != "posix":
        return False
    import select

    return bool(select.select([sys.stdin], [], [], 0)[0])


def standby(token: str, family: str) -> int:
    """Warms up, parks, then renders the one job whose SPEC path arrives on stdin (see the docstring).

    A job that arrived while Blender was still starting is rendered at once, without the warm-up: the
    warm-up frame would only delay it (it saves the job's first render less than it costs itself)."""
    reporter = Reporter(token)
    started = time.monotonic()
    import bpy  # noqa: F401  (the start-up a standby exists to pay early)

    if job_waiting():
        reporter.emit("parked", seconds=round(time.monotonic() - started, 3), warm_skipped=True)
    else:
        try:
            warm_up(family)
            reporter.emit("parked", seconds=round(time.monotonic() - started, 3))
        except Exception as exc:  # a failed warm-up costs only its time: the job still renders
            reporter.emit("parked", seconds=round(time.monotonic() - started, 3), warm_error=str(exc)[:300])
    spec_path = sys.stdin.readline().strip()
    if not spec_path:  # the worker closed stdin: no job for this process
        return 0
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    if spec.get("token") != token:
        reporter.emit("error", message="the job's spec does not carry this standby's token")
        return 2
    return run_job(spec, reporter)


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
    if args[:1] == [STANDBY] and len(args) == 3:
        return standby(args[1], args[2])
    with open(spec_path_from_argv(argv), encoding="utf-8") as file:
        spec = json.load(file)
    return run_job(spec, Reporter(spec["token"]))


def run_job(spec: dict[str, Any], reporter: Reporter) -> int:
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
