"""Operators: start/stop the worker, check the setup, handle the key, and the timer that drains news.

None of these does network, disk or subprocess work on Blender's main thread: they hand it to threads
(``session``) and the modal ``monitor`` operator only drains queues and asks for a redraw, 10 times a
second, so Blender's UI never waits on the worker.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import bpy

from .preferences import get_preferences, key_file_path, preference_values
from .session import ExtensionSession, write_key_file
from .worker.config import WorkerConfig
from .worker.errors import ConfigError

log = logging.getLogger("veriframe.addon")
SESSION = ExtensionSession()
TIMER_STEP = 0.1
_previews: bpy.utils.previews.ImagePreviewCollection | None = None  # type: ignore[name-defined]


def build_config(
    context: bpy.types.Context | None = None, environ: dict[str, str] | None = None
) -> WorkerConfig:
    """The worker's settings here: changed preferences, then ``environ`` (default: this process's)."""
    environ = dict(os.environ) if environ is None else environ
    prefs = get_preferences(context)
    values = preference_values(prefs)
    if not values.get("blender_path") and not environ.get("BLENDER_PATH"):
        values["blender_path"] = running_blender()  # default: render with the Blender that is running
    key_source = prefs.key_source if prefs is not None else "ENV"
    keystore = (
        Path(bpy.path.abspath(prefs.keystore_path)) if prefs is not None and prefs.keystore_path else None
    )
    return SESSION.build_config(values, key_source, key_file_path(), environ=environ, keystore=keystore)


def offline_reason() -> str | None:
    """Why this Blender may not connect now (None: it may). Blender's extension rules: an add-on makes
    no network request while ``bpy.app.online_access`` is off."""
    if bpy.app.online_access:
        return None
    if bpy.app.online_access_override:
        return (
            "Blender was started with --offline-mode, so the worker may not connect: start Blender "
            "without it (headless: with --online-mode)"
        )
    return (
        "Allow Online Access is off (Preferences > System > Network), so the worker may not connect "
        "to the VeriFrame network: turn it on to start"
    )


def running_blender() -> str:
    """This Blender as a render Blender: its executable, or for the ``bpy`` module the Python running it."""
    return bpy.app.binary_path or sys.executable


def render_preview_icon(path: Path | None) -> int:
    """Icon id of the last render's thumbnail (loaded on the main thread, once per new file)."""
    global _previews
    if path is None or not path.is_file():
        return 0
    if _previews is None:
        import bpy.utils.previews

        _previews = bpy.utils.previews.new()
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _previews:
        _previews.clear()
        _previews.load(key, str(path), "IMAGE")
    return _previews[key].icon_id


_history_previews: bpy.utils.previews.ImagePreviewCollection | None = None  # type: ignore[name-defined]
HISTORY_ICONS_KEPT = 60


def history_icon(path: Path) -> int:
    """Icon id of a history thumbnail; Blender loads previews lazily, so drawing never waits on it."""
    global _history_previews
    if not path.is_file():
        return 0
    if _history_previews is None:
        import bpy.utils.previews

        _history_previews = bpy.utils.previews.new()
    key = str(path)
    if key not in _history_previews:
        if len(_history_previews) >= HISTORY_ICONS_KEPT:
            _history_previews.clear()
        _history_previews.load(key, key, "IMAGE")
    return _history_previews[key].icon_id


def free_previews() -> None:
    global _previews, _history_previews
    for collection in (_previews, _history_previews):
        if collection is not None:
            bpy.utils.previews.remove(collection)
    _previews = _history_previews = None


def tag_redraw() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm else []:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


_synced_history: tuple = ()


def monitor_tick() -> None:
    """One timer tick: drain the queues and redraw if anything changed. Kept to microseconds."""
    global _synced_history
    if SESSION.drain():
        history = SESSION.worker.status.history if SESSION.worker is not None else ()
        if history is not _synced_history and bpy.context.window_manager is not None:
            from .panel import sync_history  # the panel imports this module

            sync_history(bpy.context.window_manager, history)
            _synced_history = history
        tag_redraw()


def ensure_monitor() -> None:
    """Starts the modal timer if none runs (after Start, Check setup, or a File > Open)."""
    if VERIFRAME_OT_monitor.running or bpy.app.background:
        return
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm and wm.windows else None)
    if window is None:
        return
    with bpy.context.temp_override(window=window):
        bpy.ops.veriframe.monitor("INVOKE_DEFAULT")


class VERIFRAME_OT_monitor(bpy.types.Operator):
    """Drains the worker's news into the panel (runs while the worker or a check is busy)"""

    bl_idname = "veriframe.monitor"
    bl_label = "VeriFrame Monitor"
    bl_options = {"INTERNAL"}

    running = False
    _timer = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if VERIFRAME_OT_monitor.running:
            return {"CANCELLED"}
        VERIFRAME_OT_monitor.running = True
        self._timer = context.window_manager.event_timer_add(TIMER_STEP, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # bpy's Event does not say which timer fired (no ``event.timer``): any TIMER is a cheap tick.
        if event.type != "TIMER":
            SESSION.note_input()  # the operator is using Blender (PAUSE_WHEN_BUSY waits for quiet)
            return {"PASS_THROUGH"}
        try:
            monitor_tick()
        except Exception:  # a failing tick must not leave the panel frozen with "running" still set
            log.exception("VeriFrame panel update failed")
            self._finish(context)
            return {"CANCELLED"}
        if not SESSION.busy:
            self._finish(context)
            return {"FINISHED"}
        return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        self._finish(context)

    def _finish(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        VERIFRAME_OT_monitor.running = False


class _ThreadLauncher:
    """Operators that read the settings, hand work to a thread, and let the monitor report on it."""

    launch: Callable[[WorkerConfig], None]  # each subclass starts its own thread

    def execute(self, context: bpy.types.Context) -> set[str]:
        offline = offline_reason()
        if offline is not None:  # checked first: nothing below may reach the network
            self.report({"ERROR"}, offline)  # type: ignore[attr-defined]
            return {"CANCELLED"}
        try:
            config = build_config(context)
        except ConfigError as exc:
            self.report({"ERROR"}, f"VeriFrame setting {exc}")  # type: ignore[attr-defined]
            return {"CANCELLED"}
        self.launch(config)
        ensure_monitor()
        return {"FINISHED"}


class VERIFRAME_OT_start(_ThreadLauncher, bpy.types.Operator):
    """Start rendering VeriFrame jobs on this machine"""

    bl_idname = "veriframe.start"
    bl_label = "Start"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not SESSION.worker_running

    def launch(self, config: WorkerConfig) -> None:
        SESSION.start_worker(config)


class VERIFRAME_OT_stop(bpy.types.Operator):
    """Stop the worker: after the current job, or now (a running render is killed)"""

    bl_idname = "veriframe.stop"
    bl_label = "Stop"

    now: bpy.props.BoolProperty(name="Now", default=False, options={"SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return SESSION.worker_running

    def execute(self, context: bpy.types.Context) -> set[str]:
        SESSION.stop_worker(now=self.now)
        return {"FINISHED"}


class VERIFRAME_OT_check_setup(_ThreadLauncher, bpy.types.Operator):
    """Test the backend, IPFS API and gateway, the wallet key and the render Blender"""

    bl_idname = "veriframe.check_setup"
    bl_label = "Check setup"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not SESSION.checks_running

    def launch(self, config: WorkerConfig) -> None:
        SESSION.start_checks(config)


class VERIFRAME_OT_pause(bpy.types.Operator):
    """Pause: the job in hand finishes, then no new job is taken until Resume (the backend is told)"""

    bl_idname = "veriframe.pause"
    bl_label = "Pause"

    resume: bpy.props.BoolProperty(name="Resume", default=False, options={"SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return SESSION.worker_running

    def execute(self, context: bpy.types.Context) -> set[str]:
        assert SESSION.worker is not None  # poll
        SESSION.worker.set_paused(not self.resume)
        return {"FINISHED"}


class VERIFRAME_OT_block_creator(bpy.types.Operator):
    """Never take another job from this job's creator (remembered in the data folder)"""

    bl_idname = "veriframe.block_creator"
    bl_label = "Never take jobs from this creator"
    bl_options = {"INTERNAL"}

    creator: bpy.props.StringProperty(name="Creator", options={"SKIP_SAVE", "HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SESSION.worker is None or not self.creator:
            return {"CANCELLED"}
        SESSION.worker.block_creator(self.creator)
        self.report({"INFO"}, f"No more jobs from {self.creator}")
        return {"FINISHED"}


class VERIFRAME_OT_log_line(bpy.types.Operator):
    """A line of the worker's log"""

    bl_idname = "veriframe.log_line"
    bl_label = "Log line"
    bl_options = {"INTERNAL"}

    line: bpy.props.StringProperty(options={"SKIP_SAVE", "HIDDEN"})  # type: ignore[valid-type]

    @classmethod
    def description(cls, context: bpy.types.Context, properties: bpy.types.OperatorProperties) -> str:
        return properties.line or "A line of the worker's log"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_popup(self, width=640)

    def draw(self, context: bpy.types.Context) -> None:
        import textwrap

        for part in textwrap.wrap(self.line, 100) or [""]:
            self.layout.label(text=part)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return {"FINISHED"}


class _KeyEntry:
    key: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Private key", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"}
    )

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "key")


class VERIFRAME_OT_enter_session_key(_KeyEntry, bpy.types.Operator):
    """Type the wallet's private key; it is kept in memory until Blender quits, never saved"""

    bl_idname = "veriframe.enter_session_key"
    bl_label = "Enter key for this session"
    bl_options = {"INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        SESSION.session_key = self.key.strip() or None
        self.key = ""
        return {"FINISHED"}


class VERIFRAME_OT_enter_keystore_password(bpy.types.Operator):
    """Type the keystore's password; it is kept in memory until Blender quits, never saved"""

    bl_idname = "veriframe.enter_keystore_password"
    bl_label = "Enter keystore password"
    bl_options = {"INTERNAL"}

    password: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Password", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"}
    )

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(self, "password")

    def execute(self, context: bpy.types.Context) -> set[str]:
        SESSION.keystore_password = self.password or None
        self.password = ""
        return {"FINISHED"}


class VERIFRAME_OT_save_key_file(_KeyEntry, bpy.types.Operator):
    """Save the wallet's private key in a file only you can read, in the extension's user folder"""

    bl_idname = "veriframe.save_key_file"
    bl_label = "Save key to file"
    bl_options = {"INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self.key.strip():
            self.report({"ERROR"}, "No key entered")
            return {"CANCELLED"}
        path = key_file_path()
        write_key_file(path, self.key)
        self.key = ""
        self.report({"INFO"}, f"Key saved to {path} (readable by you only)")
        return {"FINISHED"}


class VERIFRAME_OT_blender_add(bpy.types.Operator):
    """Add a Blender executable, or a Python with the bpy module, to the render Blenders"""

    bl_idname = "veriframe.blender_add"
    bl_label = "Add render Blender"
    bl_options = {"INTERNAL"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        return add_render_blender(self, context, self.filepath)


class VERIFRAME_OT_blender_add_running(bpy.types.Operator):
    """Add the Blender that is running now to the render Blenders"""

    bl_idname = "veriframe.blender_add_running"
    bl_label = "Add this Blender"
    bl_options = {"INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        return add_render_blender(self, context, running_blender())


class VERIFRAME_OT_blender_remove(bpy.types.Operator):
    """Remove the selected Blender from the render Blenders"""

    bl_idname = "veriframe.blender_remove"
    bl_label = "Remove render Blender"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        prefs = get_preferences(context)
        return prefs is not None and len(prefs.blenders) > 0

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = get_preferences(context)
        assert prefs is not None  # poll
        index = min(prefs.blender_index, len(prefs.blenders) - 1)
        prefs.blenders.remove(index)
        prefs.blender_index = max(0, index - 1)
        context.preferences.is_dirty = True
        return {"FINISHED"}


def add_render_blender(operator: bpy.types.Operator, context: bpy.types.Context, path: str) -> set[str]:
    """Appends ``path`` to the list unless it is empty or already there (which is said, not an error)."""
    prefs = get_preferences(context)
    path = bpy.path.abspath(path).strip() if path else ""
    if prefs is None or not path:
        operator.report({"ERROR"}, "No Blender chosen")
        return {"CANCELLED"}
    if any(entry.path == path for entry in prefs.blenders):
        operator.report({"INFO"}, f"{path} is already a render Blender")
        return {"CANCELLED"}
    prefs.blenders.add().path = path
    prefs.blender_index = len(prefs.blenders) - 1
    context.preferences.is_dirty = True
    operator.report({"INFO"}, f"Added {path}; Check setup probes it")
    return {"FINISHED"}


CLASSES = (
    VERIFRAME_OT_monitor,
    VERIFRAME_OT_start,
    VERIFRAME_OT_stop,
    VERIFRAME_OT_check_setup,
    VERIFRAME_OT_pause,
    VERIFRAME_OT_block_creator,
    VERIFRAME_OT_log_line,
    VERIFRAME_OT_enter_session_key,
    VERIFRAME_OT_enter_keystore_password,
    VERIFRAME_OT_save_key_file,
    VERIFRAME_OT_blender_add,
    VERIFRAME_OT_blender_add_running,
    VERIFRAME_OT_blender_remove,
)
