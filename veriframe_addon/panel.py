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
    "waiting": "ERROR",
    "claiming": "HAND",
    "downloading": "IMPORT",
    "rendering": "RENDER_STILL",
    "uploading": "EXPORT",
    "reporting": "CHECKMARK",
}
LOG_LINES_SHOWN = 8
WRAP_DEFAULT = 44  # no region to measure (a test drawing the panel in background mode)


def _chars_that_fit(context: bpy.types.Context) -> int:
    """Characters per label line in this sidebar: Blender clips a longer label, hiding an error's middle.

    About 6.5 px a character at UI scale 1, less the box, icon and margins (seen in the real GUI).
    """
    region = getattr(context, "region", None)
    if region is None or region.width <= 1:
        return WRAP_DEFAULT
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    return max(20, int((region.width / max(scale, 0.1) - 60) / 6.5))


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

        # Stacked while running: side by side, a default-width sidebar clips "Stop after current job".
        row = layout.column(align=True) if SESSION.worker_running else layout.row(align=True)
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
            if status.render_blender and (status.job_id or status.last_render):
                # During a render: the Blender rendering it; after: the one that rendered the last result.
                box.label(text=f"In {status.render_blender}", icon="BLENDER")
            grid = box.grid_flow(columns=2, even_columns=True)
            grid.label(text=f"Done {status.completed}")
            grid.label(text=f"Failed {status.failed}")
            box.label(
                text=f"Reward {_wei(status.reward_total)}"
            )  # a third column clipped it to "Reward 1e..."
            if status.sandbox:
                sandboxed = status.sandbox.startswith("sandboxed")
                box.label(
                    text="Renders sandboxed (bwrap)" if sandboxed else "Renders NOT sandboxed",
                    icon="LOCKED" if sandboxed else "UNLOCKED",
                )
                if not sandboxed:  # Windows, macOS, or Linux without bwrap: say what still guards the node
                    box.label(text="Only the scene check guards this node")

        message = operator_message(status.last_error if status is not None else None)
        if message:
            _wrapped(layout.box(), message, _chars_that_fit(context), icon="ERROR")

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
                    checks,
                    f"{result.name}: {result.message}",
                    _chars_that_fit(context),
                    icon="CHECKMARK" if result.ok else "CANCEL",
                )

        if worker is not None and worker.log_lines:
            logs = layout.box()
            logs.label(text="Recent log")
            for line in list(worker.log_lines)[-LOG_LINES_SHOWN:]:
                text = line.text.replace("[Worker] ", "", 1)[:90]  # every line has it; the room is scarce
                logs.label(text=text, icon="ERROR" if line.level in {"ERROR", "WARNING"} else "DOT")


CLASSES = (VIEW3D_PT_veriframe,)
