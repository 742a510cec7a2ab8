"""Drives the add-on inside the ``bpy`` module for the tests; prints one JSON result line.

    python tests/addon_probe.py SCENARIO [ARGS as JSON]

Each scenario runs in its own process because Blender's state is per process. The bpy module runs in
background mode, where no window exists and panels cannot be drawn by Blender itself; ``RecordingLayout``
stands in for ``UILayout`` there and checks every call and keyword against ``UILayout``'s real RNA
definition, so a misspelt method, argument or icon still fails. (The real GUI is checked separately,
under Xvfb with a Blender binary.)
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpy

# Importing bpy puts Blender's own modules on the path; addon_utils is one of them.
addon_utils = importlib.import_module("addon_utils")

from tests.processes import render_children  # noqa: E402

ADDON = "veriframe_addon"


class RecordingLayout:
    """Records UI calls after checking them against ``bpy.types.UILayout``'s RNA functions."""

    functions = bpy.types.UILayout.bl_rna.functions
    properties = bpy.types.UILayout.bl_rna.properties
    icons = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        object.__setattr__(self, "calls", calls)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.properties:
            raise AttributeError(f"UILayout has no property {name!r}")

    def __getattr__(self, name: str) -> Any:
        if name not in self.functions:
            raise AttributeError(f"UILayout has no function {name!r}")
        params = self.functions[name].parameters

        def call(*args: Any, **kwargs: Any) -> Any:
            for key, value in kwargs.items():
                if key not in params:
                    raise TypeError(f"UILayout.{name}() has no keyword {key!r}")
                if key == "icon" and value not in self.icons:
                    raise ValueError(f"unknown icon {value!r}")
            self.calls.append((name, kwargs))
            if name == "operator":
                op = args[0] if args else kwargs["operator"]
                return OperatorProps(op)
            return RecordingLayout(self.calls)

        return call


class OperatorProps:
    def __init__(self, idname: str) -> None:
        module, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
        object.__setattr__(self, "rna", rna)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.rna.properties:
            raise AttributeError(f"{self.rna.identifier} has no property {name!r}")


def draw_panel() -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    bpy.types.VIEW3D_PT_veriframe.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    return calls


def labels(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [kw.get("text", "") for name, kw in calls if name == "label"]


def scenario_register_cycle(_: dict) -> dict:
    result: dict[str, Any] = {}
    for round_ in range(2):
        addon_utils.enable(ADDON, default_set=True, handle_error=None)
        result[f"registered_{round_}"] = {
            "panel": hasattr(bpy.types, "VIEW3D_PT_veriframe"),
            "ops": [hasattr(bpy.ops.veriframe, op) for op in ("start", "stop", "check_setup", "monitor")],
            "start_poll": bpy.ops.veriframe.start.poll(),
            "stop_poll": bpy.ops.veriframe.stop.poll(),
            "prefs": bpy.context.preferences.addons[ADDON].preferences.poll_interval,
            "handlers": [h.__name__ for h in bpy.app.handlers.load_post],
        }
        addon_utils.disable(ADDON, default_set=True, handle_error=None)
        result[f"unregistered_{round_}"] = {
            "panel": hasattr(bpy.types, "VIEW3D_PT_veriframe"),
            "handlers": [h.__name__ for h in bpy.app.handlers.load_post],
        }
    return result


HELD = {"paused": "paused by the operator", "sleeping": "outside the schedule until 18:00"}


def scenario_draw_states(args: dict) -> dict:
    from veriframe_addon import operators, panel
    from veriframe_addon.worker.ops.setup_check import CheckResult
    from veriframe_addon.worker.ops.status_server import STATES
    from veriframe_addon.worker.runner import BackgroundWorker, LogLine
    from veriframe_addon.worker.state.history import Earnings, HistoryEntry
    from veriframe_addon.worker.status import BackendFigures, SlotStatus, WorkerStatus

    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    drawn: dict[str, list[str]] = {"offline": labels(draw_panel())}  # online access is off by default
    bpy.context.preferences.system.use_online_access = True
    drawn["no worker"] = labels(draw_panel())
    config = operators.SESSION.build_config({}, "ENV", Path("/nonexistent"), environ=args["env"])
    worker = BackgroundWorker(config)  # never started: the panel only reads its status and log
    operators.SESSION.worker = worker
    png = Path(args["png"])
    history = (
        HistoryEntry("job-new", "completed", reward=10**15, thumbnail=str(png)),
        HistoryEntry("job-old", "failed", reason="not a .blend file"),
    )
    panel.sync_history(bpy.context.window_manager, history)
    history_rows = [
        (row.text, row.failed, row.thumbnail) for row in bpy.context.window_manager.veriframe_history
    ]
    # A live thread stands for the worker's (which is never started here): the panel draws its controls.
    alive = threading.Event()
    stand_in = threading.Thread(target=alive.wait, daemon=True)
    stand_in.start()
    for state in STATES:  # every state the worker publishes
        worker._thread = stand_in if state != "stopped" else None
        worker.status = WorkerStatus(
            state=state,
            job_id="6f0c-job",
            asset_cid="QmAsset",
            progress=0.42,
            completed=3,
            failed=1,
            reward_total=10**15,
            verified=state != "idle",
            last_error="POST /jobs/x/assign: backend unreachable at http://b (boom)",
            last_render=png,
            sandbox="sandboxed with bwrap (...)" if state == "rendering" else "NOT sandboxed: no bwrap",
            # The software-GL words a render child gives: the panel drops their parenthesised details.
            render_blender="Blender 4.2.23 LTS on llvmpipe (LLVM 15.0.6, 256 bits) (OPENGL)"
            if state == "rendering"
            else None,
            creator="0xc0ffee",
            held={"paused": "paused by the operator", "sleeping": "outside the schedule until 18:00"}.get(
                state
            ),
            history=history,
            earnings=Earnings(10**15, 2 * 10**15, 5 * 10**15, 5, 1),
            backend_figures=BackendFigures(5 * 10**15, 5, 3.0),
        )
        worker.log_lines.append(LogLine("INFO", f"12:00:00 [Worker] state {state}"))
        calls = draw_panel()
        drawn[state] = labels(calls)
        drawn[f"{state} calls"] = [
            kw.get("text") or kw.get("listtype_name") or name for name, kw in calls if name != "label"
        ]
    worker._thread = stand_in  # two render slots: one row each
    worker.status = WorkerStatus(
        state="rendering",
        job_id="6f0c-job",
        progress=0.42,
        slots=(
            SlotStatus(0, "CUDA NVIDIA A (CUDA_0)", "rendering", "6f0c-job", "QmA", 0.42),
            SlotStatus(1, "CUDA NVIDIA B (CUDA_1)", "idle"),
        ),
        delivering=("a1b2c3d4-earlier-job",),  # slot 1's last result, on its way
    )
    drawn["slots"] = labels(draw_panel())
    operators.SESSION.checks = [
        CheckResult("Backend", True, "reachable", 0.1),
        CheckResult("IPFS gateway", False, "HTTP 404", 0.2),
    ]
    drawn["checks"] = labels(draw_panel())
    alive.set()
    prefs_calls: list = []
    prefs = bpy.context.preferences.addons[ADDON].preferences
    for source in ("ENV", "FILE", "SESSION"):
        prefs.key_source = source
        type(prefs).draw(
            SimpleNamespace(
                layout=RecordingLayout(prefs_calls),
                key_source=source,
                **{k: getattr(prefs, k) for k in ("backend_url", "blenders", "blender_index")},
            ),
            bpy.context,
        )
    operators.SESSION.worker = None
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return {"drawn": drawn, "prefs_calls": len(prefs_calls), "history_rows": history_rows}


def scenario_blender_list(args: dict) -> dict:
    """The render-Blender list: the operators edit it, it becomes BLENDER_PATH, and it survives a restart.

    ``write`` adds ``paths`` (one twice) and this Blender, removes the last, and saves the preferences;
    ``read`` (a new process, same user config) only reports what Blender loaded.
    """
    if args["phase"] == "read":
        bpy.ops.wm.read_userpref()  # the bpy module starts on factory preferences; Blender reads them
    addon_utils.enable(ADDON, default_set=True, handle_error=None)  # before any import of it: no reload
    from veriframe_addon import operators

    prefs = bpy.context.preferences.addons[ADDON].preferences
    result: dict[str, Any] = {}
    if args["phase"] == "write":
        result["empty_remove_poll"] = bpy.ops.veriframe.blender_remove.poll()
        twice = [*args["paths"], args["paths"][0]]
        outcomes = [bpy.ops.veriframe.blender_add(filepath=path) for path in twice]
        result["add_outcomes"] = [sorted(outcome) for outcome in outcomes]
        result["add_running"] = sorted(bpy.ops.veriframe.blender_add_running())
        result["after_add"] = [entry.path for entry in prefs.blenders]
        prefs.blender_index = len(prefs.blenders) - 1
        result["remove"] = sorted(bpy.ops.veriframe.blender_remove())
        bpy.ops.wm.save_userpref()
    result["listed"] = [entry.path for entry in prefs.blenders]
    config = operators.build_config(environ=args["env"])
    result["blender_path"] = config.blender_path
    calls: list = []
    bpy.types.VERIFRAME_UL_blenders.draw_item(
        None, bpy.context, RecordingLayout(calls), prefs, prefs.blenders[0], 0, prefs, "blender_index"
    )
    result["row_calls"] = [name for name, _ in calls]
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return result


def scenario_offline_start(args: dict) -> dict:
    """Online access off: Start and Check setup are refused with the reason, and nothing connects."""
    from veriframe_addon import operators

    os.environ.update(args["env"])
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    result: dict[str, Any] = {"online_access": bpy.app.online_access}
    for name in ("start", "check_setup"):
        try:
            result[name] = sorted(getattr(bpy.ops.veriframe, name)())
        except RuntimeError as exc:  # an operator's ERROR report raises in background mode
            result[name] = str(exc)
    time.sleep(2.0)  # a thread that was started anyway would have connected by now
    result["worker"] = operators.SESSION.worker is not None
    result["checks_running"] = operators.SESSION.checks_running
    result["panel"] = labels(draw_panel())
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return result


def scenario_pause_from_panel(args: dict) -> dict:
    """Pause mid-job with the panel's button, then Resume: what the worker and the backend show."""
    import requests

    from veriframe_addon import operators

    os.environ.update(args["env"])
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.veriframe.start() == {"FINISHED"}
    record = f"{args['env']['BACKEND_API_URL']}/workers/{args['env']['WORKER_ADDRESS']}"
    seen: dict[str, Any] = {"states": []}
    deadline = time.monotonic() + args.get("timeout", 240)
    phase = "until-rendering"
    while time.monotonic() < deadline and phase != "done":
        operators.monitor_tick()
        draw_panel()
        status = operators.SESSION.worker.status
        if not seen["states"] or seen["states"][-1] != status.state:
            seen["states"].append(status.state)
        if phase == "until-rendering" and status.state == "rendering":
            seen["pause"] = sorted(bpy.ops.veriframe.pause())
            phase = "until-paused"
        elif phase == "until-paused" and status.state == "paused" and status.held:
            time.sleep(1.5)  # the backend is told right after the state changes
            seen["completed_when_paused"] = status.completed
            seen["active_when_paused"] = requests.get(record, timeout=10).json()["active"]
            seen["held"] = status.held
            seen["resume"] = sorted(bpy.ops.veriframe.pause(resume=True))
            phase = "until-second"
        elif phase == "until-second" and status.completed >= 2:
            seen["active_after"] = requests.get(record, timeout=10).json()["active"]
            phase = "done"
        time.sleep(operators.TIMER_STEP)
    bpy.ops.veriframe.stop(now=True)
    operators.SESSION.worker.join(60)
    seen["phase"] = phase
    seen["log"] = [line.text for line in operators.SESSION.worker.log_lines]
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return seen


def scenario_run_job(args: dict) -> dict:
    """Start from the operator, drive the monitor's tick as Blender's timer would, until one job is done."""
    from veriframe_addon import operators

    os.environ.update(args["env"])
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.backend_url = args["env"]["BACKEND_API_URL"]
    prefs.wallet_address = args["env"]["WORKER_ADDRESS"]
    prefs.key_source = "SESSION"
    bpy.context.preferences.system.use_online_access = True  # as the user does: Allow Online Access
    operators.SESSION.session_key = args["key"]
    os.environ.pop("WORKER_PRIVATE_KEY", None)
    assert bpy.ops.veriframe.start() == {"FINISHED"}

    ticks, draws, states = [], [], []
    reopened = False
    deadline = time.monotonic() + args.get("timeout", 300)
    while time.monotonic() < deadline:
        if not reopened and args.get("open_file") and operators.SESSION.worker.status.state == "rendering":
            # File > Open mid-job: Blender's data is replaced, the worker must carry on.
            bpy.ops.wm.open_mainfile(filepath=args["open_file"], load_ui=False, use_scripts=False)
            reopened = bpy.data.filepath == args["open_file"]
        started = time.perf_counter()
        operators.monitor_tick()
        ticks.append(time.perf_counter() - started)
        started = time.perf_counter()
        draw_panel()
        draws.append(time.perf_counter() - started)
        status = operators.SESSION.worker.status
        if not states or states[-1] != status.state:
            states.append(status.state)
        if status.completed >= 1:
            break
        time.sleep(operators.TIMER_STEP)
    bpy.ops.veriframe.stop(now=False)
    operators.SESSION.worker.join(60)
    operators.monitor_tick()
    log_text = [line.text for line in operators.SESSION.worker.log_lines]
    prefs_path = Path(bpy.utils.resource_path("USER")) / "config" / "userpref.blend"
    bpy.ops.wm.save_userpref()
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return {
        "completed": operators.SESSION.worker.status.completed,
        "states": states,
        "ticks": len(ticks),
        "tick_max_ms": max(ticks) * 1000,
        "draw_max_ms": max(draws) * 1000,
        "log": log_text,
        "userpref": str(prefs_path) if prefs_path.exists() else None,
        "running_after_disable": operators.SESSION.worker_running,
        "reopened_mid_job": reopened,
    }


def scenario_disable_while_rendering(args: dict) -> dict:
    """Disabling the add-on mid-render must stop the thread and kill the render child."""
    from veriframe_addon import operators

    os.environ.update(args["env"])
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.veriframe.start() == {"FINISHED"}
    deadline = time.monotonic() + 120
    children: list[int] = []
    while time.monotonic() < deadline and not children:
        operators.monitor_tick()
        if operators.SESSION.worker.status.state == "rendering":
            children = render_children(args["env"]["VERIFRAME_DATA_DIR"])
        time.sleep(0.05)
    worker = operators.SESSION.worker
    started = time.monotonic()
    addon_utils.disable(ADDON, default_set=True, handle_error=None)
    return {
        "children_while_rendering": children,
        "disable_seconds": time.monotonic() - started,
        "thread_alive": worker.running,
        "children_after": render_children(args["env"]["VERIFRAME_DATA_DIR"]),
        "completed": worker.status.completed,
    }


if __name__ == "__main__":
    name = sys.argv[1]
    scenario_args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    output = globals()[f"scenario_{name.replace('-', '_')}"](scenario_args)
    output["bpy_version"] = list(bpy.app.version)  # which Blender ran it: the version matrix checks this
    print("@@RESULT " + json.dumps(output, default=str), flush=True)
    os._exit(0)  # skip the bpy module's exit-time cleanup, which can hang
