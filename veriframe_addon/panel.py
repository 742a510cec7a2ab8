"""The "VeriFrame" tab of the 3D view's sidebar: controls, state, counters, last render, recent log.

Drawing only reads what the timer already drained into ``SESSION``; it never waits on anything.
"""

from __future__ import annotations

import textwrap

import bpy

from .operators import SESSION, render_preview_icon
from .session import operator_message

STATE_ICONS = {
    "stopped": "PAUSE",
    "signing-in": "KEY_HLT",
    "polling": "VIEWZOOM",
    "idle": "TIME",
    "claiming": "HAND",
    "downloading": "IMPORT",
    "rendering": "RENDER_STILL",
    "uploading": "EXPORT",
    "reporting": "CHECKMARK",
}
LOG_LINES_SHOWN = 8


def _wrapped(layout: bpy.types.UILayout, text: str, width: int = 44, icon: str = "NONE") -> None:
    for index, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")


def _wei(amount: int) -> str:
    """Rewards are in wei; 18 digits do not fit a sidebar."""
    return f"{amount:.3g} wei" if amount >= 10**6 else f"{amount} wei"


class VIEW3D_PT_veriframe(bpy.types.Panel):
    bl_label = "VeriFrame Worker"
    bl_idname = "VIEW3D_PT_veriframe"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VeriFrame"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        worker = SESSION.worker
        status = worker.status if worker is not None else None

        row = layout.row(align=True)
        if SESSION.worker_running:
            row.operator("veriframe.stop", text="Stop after current job", icon="PAUSE").now = False
            row.operator("veriframe.stop", text="Stop now", icon="CANCEL").now = True
        else:
            row.operator("veriframe.start", text="Start", icon="PLAY")
        layout.operator("veriframe.check_setup", icon="CHECKMARK")

        box = layout.box()
        state = status.state if status is not None else "stopped"
        progress = status.progress if status is not None else None
        text = state.replace("-", " ").capitalize()
        if progress is not None and state in {"downloading", "rendering"}:
            text += f" {progress * 100:.0f}%"
        if SESSION.worker_running and state == "stopped":
            text = "Starting"
        box.label(text=text, icon=STATE_ICONS.get(state, "QUESTION"))
        if status is not None:
            if status.verified is False:
                box.label(text="Not verified yet: no jobs until an admin verifies you", icon="ERROR")
            if status.job_id:
                box.label(text=f"Job {status.job_id}")
                box.label(text=f"Asset {status.asset_cid or '-'}")
            grid = box.grid_flow(columns=3, even_columns=True)
            grid.label(text=f"Done {status.completed}")
            grid.label(text=f"Failed {status.failed}")
            grid.label(text=f"Reward {_wei(status.reward_total)}")

        message = operator_message(status.last_error if status is not None else None)
        if message:
            _wrapped(layout.box(), message, icon="ERROR")

        icon = render_preview_icon(status.last_render if status is not None else None)
        if icon:
            col = layout.column()
            col.label(text="Last render")
            col.template_icon(icon_value=icon, scale=6.0)

        if SESSION.checks or SESSION.checks_running:
            checks = layout.box()
            checks.label(text="Setup check" + (" (running)" if SESSION.checks_running else ""))
            for result in SESSION.checks:
                _wrapped(
                    checks, f"{result.name}: {result.message}", icon="CHECKMARK" if result.ok else "CANCEL"
                )

        if worker is not None and worker.log_lines:
            logs = layout.box()
            logs.label(text="Recent log")
            for line in list(worker.log_lines)[-LOG_LINES_SHOWN:]:
                logs.label(text=line.text[:90], icon="ERROR" if line.level in {"ERROR", "WARNING"} else "DOT")


CLASSES = (VIEW3D_PT_veriframe,)
