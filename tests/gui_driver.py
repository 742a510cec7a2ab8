"""Drives the real Blender GUI through the VeriFrame panel's states for ``test_gui_screenshots.py``.

    blender -p 0 0 1600 900 --python tests/gui_driver.py -- COORD_DIR

Runs inside Blender (its own Python; the installed extension, not this checkout, provides the add-on).
A ``--python`` script runs before the window's event loop starts, so everything here happens in a
``bpy.app.timers`` tick that never blocks: the GUI keeps drawing between ticks, which is what the
screenshots are for. The test process owns the screen capture and the devnet, so the two sides take
turns through files in COORD_DIR:

- first Start with *Allow Online Access* off (refused, the panel says why), then with it allowed;
- the driver writes ``state-NAME.ready`` (JSON: what the panel showed) once the panel was drawn in
  that state, then waits;
- the test captures the screen, writes ``state-NAME.shot`` and does what leads to the next state
  (submits a job);
- at the end the driver writes ``report.json`` and quits Blender. ``abort`` from the test quits early.

The panel's ``draw`` is wrapped to record what it read each time it really ran, so "the panel showed
state X in the VeriFrame tab" is a fact Blender produced, not an assumption.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

log = logging.getLogger("veriframe.gui_driver")

ADDON_PACKAGE = "bl_ext.user_default.veriframe_addon"
CATEGORY = "VeriFrame"
TICK = 0.2
SETTLE = 0.6  # after a matching draw: lets Blender swap the frame to the screen before the capture
SETUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Stage:
    """One screenshot: the panel must have drawn a status that satisfies ``shown`` within ``timeout``."""

    name: str
    timeout: float
    shown: Callable[[dict[str, Any]], bool]


STAGES = (
    # Allow Online Access still off: Start was refused and the panel says why.
    Stage("offline", 60.0, lambda d: not d["running"] and d["offline"] and d["state"] == "stopped"),
    Stage(
        "idle",
        90.0,
        lambda d: d["running"] and d["state"] in {"idle", "polling"} and d["log_lines"] >= 3,
    ),
    Stage("rendering", 180.0, lambda d: d["running"] and d["state"] == "rendering"),
    Stage(
        "error",
        180.0,
        lambda d: d["failed"] >= 1 and bool(d["last_error"]) and d["state"] in {"idle", "polling"},
    ),
)


def _coord_dir() -> Path:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if not argv:
        raise SystemExit("gui_driver.py needs the coordination folder after '--'")
    return Path(argv[0])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written then renamed, so the test never reads half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, indent=2, default=str))
    part.replace(path)


class PanelDriver:
    """The scenario as a state machine; ``tick`` is the ``bpy.app.timers`` callback."""

    def __init__(self, coord: Path) -> None:
        self.coord = coord
        self.started = time.monotonic()
        self.operators = importlib.import_module(f"{ADDON_PACKAGE}.operators")
        self.panel_cls = importlib.import_module(f"{ADDON_PACKAGE}.panel").VIEW3D_PT_veriframe
        self.phase = "setup"
        self.stage_index = 0
        self.phase_since = self.started
        self.matched_at: float | None = None
        self.last_draw: dict[str, Any] | None = None
        self.draws = 0
        self.maximised = False
        self.report: dict[str, Any] = {
            "blender": bpy.app.version_string,
            "states": {},
            "timeline": [],
            "error": None,
        }
        self._wrap_draw()

    # -- recording what the panel drew ------------------------------------------------------------
    def _wrap_draw(self) -> None:
        """Blender looks ``draw`` up on the class at each redraw, so a wrapper sees every real draw."""
        original = self.panel_cls.draw
        driver = self

        def draw(panel: bpy.types.Panel, context: bpy.types.Context) -> None:
            original(panel, context)
            driver.record_draw(context)

        self.panel_cls.draw = draw

    def record_draw(self, context: bpy.types.Context) -> None:
        session = self.operators.SESSION
        worker = session.worker
        status = worker.status if worker is not None else None
        region = context.region
        self.draws += 1
        self.last_draw = {
            "at": round(time.monotonic() - self.started, 2),
            "category": region.active_panel_category if region is not None else None,
            "region": [region.x, region.y, region.width, region.height] if region is not None else None,
            "running": session.worker_running,
            "state": status.state if status is not None else "stopped",
            "progress": status.progress if status is not None else None,
            "job_id": status.job_id if status is not None else None,
            "completed": status.completed if status is not None else 0,
            "failed": status.failed if status is not None else 0,
            "last_error": status.last_error if status is not None else None,
            "last_render": str(status.last_render) if status is not None and status.last_render else None,
            "log_lines": len(worker.log_lines) if worker is not None else 0,
            "offline": not bpy.app.online_access,
        }

    # -- the window ---------------------------------------------------------------------------------
    def _view3d(self) -> tuple[bpy.types.Window, bpy.types.Area, bpy.types.Region] | None:
        wm = bpy.context.window_manager
        for window in wm.windows if wm else []:
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    region = next((r for r in area.regions if r.type == "UI"), None)
                    if region is not None:
                        return window, area, region
        return None

    def _show_tab(self) -> bool:
        """Sidebar on, 3D view maximised, VeriFrame tab active; True once the panel drew in that tab.

        ``Region.active_panel_category`` is writable in 4.3, but only once the sidebar has drawn with
        its tabs (before that Blender calls it read-only), so this is retried on each tick.
        """
        found = self._view3d()
        if found is None:
            return False
        window, area, region = found
        if not self.maximised:
            self.maximised = True
            with bpy.context.temp_override(window=window, area=area):
                bpy.ops.screen.screen_full_area()
            self._event("3D view maximised")
            return False
        area.spaces.active.show_region_ui = True
        try:
            if region.active_panel_category != CATEGORY:
                region.active_panel_category = CATEGORY
                self._event("VeriFrame tab selected")
        except AttributeError:  # "read-only" until the sidebar has drawn its tabs once
            pass
        area.tag_redraw()
        return self.last_draw is not None and self.last_draw["category"] == CATEGORY

    def _operator(self, name: str, **props: Any) -> set[str]:
        found = self._view3d()
        if found is None:
            raise RuntimeError("no 3D view to run the operator in")
        window, area, region = found
        with bpy.context.temp_override(window=window, area=area, region=region):
            return getattr(bpy.ops.veriframe, name)(**props)

    # -- the scenario -------------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        at = round(time.monotonic() - self.started, 2)
        self.report["timeline"].append([at, text])
        log.info("[gui-driver] %.1fs %s", at, text)
        print(f"[gui-driver] {at:.1f}s {text}", flush=True)

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_since = time.monotonic()
        self.matched_at = None
        self._event(f"phase {phase}")

    def tick(self) -> float | None:
        try:
            return self._step()
        except Exception:  # a timer that raises is dropped silently; report it and quit instead
            self.report["error"] = traceback.format_exc()
            self._finish()
            return None

    def _step(self) -> float | None:
        if (self.coord / "abort").exists():
            self.report["error"] = "aborted by the test"
            self._finish()
            return None
        waited = time.monotonic() - self.phase_since
        if self.phase == "setup":
            if self._show_tab():
                self.report["tab"] = dict(self.last_draw or {})
                try:  # online access is off: the operator refuses (its ERROR report raises here)
                    outcome = sorted(self._operator("start"))
                except RuntimeError as exc:
                    outcome = [f"refused: {exc}"]
                self.report["offline_start"] = outcome
                self.report["worker_after_offline_start"] = self.operators.SESSION.worker is not None
                self._event(f"veriframe.start with online access off -> {outcome}")
                self._enter(f"wait-{STAGES[0].name}")
            elif waited > SETUP_TIMEOUT:
                raise TimeoutError(f"the VeriFrame tab never drew (last draw: {self.last_draw})")
            return TICK
        stage = STAGES[self.stage_index]
        if self.phase.startswith("wait-"):
            return self._wait_for(stage, waited)
        if self.phase.startswith("shot-"):
            if (self.coord / f"state-{stage.name}.shot").exists():
                self._event(f"{stage.name} captured")
                if stage.name == "offline":
                    self._go_online()
                if stage.name == "rendering":
                    self._reload_mid_job()
                self.stage_index += 1
                if self.stage_index == len(STAGES):
                    self._finish()
                    return None
                self._enter(f"wait-{STAGES[self.stage_index].name}")
            elif waited > 120.0:
                raise TimeoutError(f"no screenshot of {stage.name} within 120 s")
            return TICK
        raise RuntimeError(f"unknown phase {self.phase}")

    def _go_online(self) -> None:
        """The user's one-time consent (Preferences > System > Allow Online Access), then Start again."""
        bpy.context.preferences.system.use_online_access = True
        result = self._operator("start")
        self._event(f"online access allowed; veriframe.start -> {sorted(result)}")

    def _reload_mid_job(self) -> None:
        """File > New (keeping the UI) while the worker renders: Blender ends every modal operator, so the
        panel only reaches the next state if the add-on's load_post handler re-attaches its timer."""
        before = self.operators.VERIFRAME_OT_monitor.running
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window):
            bpy.ops.wm.read_homefile(load_ui=False)
        self.report["reloaded"] = {
            "monitor_before": before,
            "worker_running": self.operators.SESSION.worker_running,
        }
        # Informative: whether Blender ended the modal timer (then the add-on's handler re-attaches it).
        self.report["monitor_right_after_reload"] = self.operators.VERIFRAME_OT_monitor.running
        self._event(f"file reloaded mid-job (monitor was running: {before})")

    def _wait_for(self, stage: Stage, waited: float) -> float:
        drawn = self.last_draw
        if drawn is not None and drawn["category"] == CATEGORY and stage.shown(drawn):
            now = time.monotonic()
            if self.matched_at is None:
                self.matched_at = now
            elif now - self.matched_at >= SETTLE:
                self.report["states"][stage.name] = dict(drawn, draws=self.draws)
                _write_json(self.coord / f"state-{stage.name}.ready", self.report["states"][stage.name])
                self._enter(f"shot-{stage.name}")
            return TICK
        self.matched_at = None  # the state went away again (e.g. polling between idles): start over
        if waited > stage.timeout:
            raise TimeoutError(f"the panel never showed {stage.name} (last draw: {drawn})")
        return TICK

    def _finish(self) -> None:
        """Stops the worker (killing a render), writes the report and quits Blender without a prompt."""
        try:
            if self.operators.SESSION.worker_running:
                self.operators.SESSION.stop_worker(now=True, wait=30.0)
                self._event("worker stopped")
        finally:
            self.report["draws"] = self.draws
            self.report["last_draw"] = self.last_draw
            _write_json(self.coord / "report.json", self.report)
            bpy.app.timers.register(_quit, first_interval=0.5)


def _quit() -> None:
    bpy.ops.wm.quit_blender()


def main() -> None:
    # A fresh user folder would otherwise greet us with the splash over the viewport.
    bpy.context.preferences.view.show_splash = False
    # A fresh user folder: Allow Online Access is off until the driver allows it (after "offline").
    bpy.context.preferences.system.use_online_access = False
    driver = PanelDriver(_coord_dir())
    bpy.app.timers.register(driver.tick, first_interval=1.0, persistent=True)  # survives the reload


main()
