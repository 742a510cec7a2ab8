"""The "VeriFrame" tab of the 3D view's sidebar: controls, state, counters, last render, recent log.

Drawing only reads what the timer already drained into ``SESSION``; it never waits on anything.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import bpy

from .operators import SESSION, history_icon, offline_reason, render_preview_icon
from .session import operator_message
from .worker.policy.tokens import Token
from .worker.runner import BackgroundWorker
from .worker.status import WorkerStatus

STATE_ICONS = {
    "stopped": "PAUSE",
    "signing-in": "KEY_HLT",
    "polling": "VIEWZOOM",
    "idle": "TIME",
    "waiting": "ERROR",
    "paused": "PAUSE",
    "sleeping": "SORTTIME",
    "busy": "TIME",
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


def _slot_rows(box: bpy.types.UILayout, slots: tuple) -> None:
    """Two lines per render slot (RENDER_SLOTS above 1): its state, job and progress, then its device
    (one line each: side by side, the sidebar clipped both)."""
    box.label(text=f"{len(slots)} render slots", icon="NODE_COMPOSITING")
    for slot in slots:
        state = slot.state.replace("-", " ").capitalize()
        if slot.progress is not None and slot.state in {"downloading", "rendering"}:
            state += f" {slot.progress * 100:.0f}%"
        words = f"{state}, job {slot.job_id[:8]}" if slot.job_id else state
        box.label(text=f"{slot.index + 1}: {words}", icon=STATE_ICONS.get(slot.state, "QUESTION"))
        box.label(text=slot.device, icon="BLANK1")


def _token(worker: BackgroundWorker | None) -> Token:
    """The reward token as the worker's settings name it (STRK, 18 decimals, when none runs)."""
    return worker.config.filters.token if worker is not None else Token()


def _without_details(text: str) -> str:
    """``text`` without its parenthesised details: "Blender 4.3.2 on llvmpipe (LLVM 15.0.6, 256 bits)
    (OPENGL)" becomes "Blender 4.3.2 on llvmpipe", which the sidebar shows whole (the job's record and
    the log keep every word)."""
    return re.sub(r"\s*\([^()]*\)", "", text).strip()


def _shortened(text: str, width: int) -> str:
    """``text`` cut from the end to ``width`` characters: Blender would clip its middle instead."""
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


class VeriFrameHistoryRow(bpy.types.PropertyGroup):
    """One finished job as the history list shows it (filled from the worker's status by the timer)."""

    job_id: bpy.props.StringProperty()  # type: ignore[valid-type]
    text: bpy.props.StringProperty()  # type: ignore[valid-type]
    detail: bpy.props.StringProperty()  # type: ignore[valid-type]
    thumbnail: bpy.props.StringProperty(subtype="FILE_PATH")  # type: ignore[valid-type]
    failed: bpy.props.BoolProperty()  # type: ignore[valid-type]


class VERIFRAME_UL_history(bpy.types.UIList):
    """The job history, newest first; scrolls, and filters by name like any Blender list."""

    def draw_item(
        self,
        context: bpy.types.Context,
        layout: bpy.types.UILayout,
        data: object,
        item: VeriFrameHistoryRow,
        icon: int,
        active_data: object,
        active_propname: str,
        index: int = 0,
    ) -> None:
        thumb = history_icon(Path(item.thumbnail)) if item.thumbnail else 0
        row = layout.row()
        if thumb:
            row.label(text=item.text, icon_value=thumb)
        else:
            row.label(text=item.text, icon="CANCEL" if item.failed else "CHECKMARK")


def sync_history(window_manager: bpy.types.WindowManager, history: tuple) -> None:
    """Copies the status's history into the list's collection (main thread, from the timer)."""
    rows = window_manager.veriframe_history
    rows.clear()
    token = _token(SESSION.worker)
    for entry in history:
        row = rows.add()
        row.job_id = entry.job_id
        when = time.strftime("%a %H:%M", time.localtime(entry.finished_at))
        # Short rows (a list clips long ones in the middle); the selected job's details go below the list.
        if entry.outcome == "completed":
            row.text = f"{when}  {token.format(entry.reward)}"
            signed = " (receipt signed)" if entry.receipt else ""
            row.detail = f"Job {entry.job_id} completed{signed}, result {entry.result_cid or '-'}"
        else:
            row.text = f"{when}  failed"
            row.detail = f"Job {entry.job_id} failed: {entry.reason or 'no reason recorded'}"
        row.failed = entry.outcome != "completed"
        row.thumbnail = entry.thumbnail or ""


def register_properties() -> None:
    bpy.types.WindowManager.veriframe_history = bpy.props.CollectionProperty(type=VeriFrameHistoryRow)
    bpy.types.WindowManager.veriframe_history_index = bpy.props.IntProperty(default=0)


def unregister_properties() -> None:
    for name in ("veriframe_history", "veriframe_history_index"):
        if hasattr(bpy.types.WindowManager, name):
            delattr(bpy.types.WindowManager, name)


def _draw_earnings(
    layout: bpy.types.UILayout, status: WorkerStatus, worker: BackgroundWorker | None, width: int
) -> None:
    """Earnings from this node's history, the backend's own figures, and the history list."""
    token = _token(worker)
    box = layout.box()
    box.label(text="Earnings", icon="FUND")
    if status.earnings is not None:
        earned = status.earnings
        box.label(text=f"Today {token.format(earned.today)}")  # one a line: side by side they clip
        box.label(text=f"This week {token.format(earned.week)}")
        box.label(text=f"In all {token.format(earned.total)}")
    figures = status.backend_figures
    if figures is not None:
        box.label(text=f"Backend: {figures.jobs_completed} jobs, {token.format(figures.total_earnings)}")
        box.label(text=f"Reputation {figures.reputation:g}")
    wm = bpy.context.window_manager
    if wm is not None and hasattr(wm, "veriframe_history") and len(wm.veriframe_history):
        box.template_list(
            listtype_name="VERIFRAME_UL_history",
            list_id="",
            dataptr=wm,
            propname="veriframe_history",
            active_dataptr=wm,
            active_propname="veriframe_history_index",
            rows=4,
        )
        rows, index = wm.veriframe_history, wm.veriframe_history_index
        if 0 <= index < len(rows):
            _wrapped(box, rows[index].detail, width)


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
            paused = status is not None and status.state == "paused"
            row.operator(
                "veriframe.pause", text="Resume" if paused else "Pause", icon="PLAY" if paused else "PAUSE"
            ).resume = paused
        else:
            row.operator("veriframe.start", text="Start", icon="PLAY")
        layout.operator("veriframe.check_setup", icon="CHECKMARK")
        offline = offline_reason()
        if offline is not None and not SESSION.worker_running:
            _wrapped(layout.box(), offline, _chars_that_fit(context), icon="INTERNET_OFFLINE")

        box = layout.box()
        state = status.state if status is not None else "stopped"
        progress = status.progress if status is not None else None
        text = state.replace("-", " ").capitalize()
        if progress is not None and state in {"downloading", "rendering"}:
            text += f" {progress * 100:.0f}%"
        if SESSION.worker_running and state == "stopped":
            text = "Starting"
        box.label(text=text, icon=STATE_ICONS.get(state, "QUESTION"))
        if progress is not None and state in {"downloading", "rendering"}:
            bar = f"{state.capitalize()} {progress * 100:.0f}%"
            if state == "rendering" and status is not None and status.samples is not None:
                bar += f", sample {status.samples[0]} of {status.samples[1]}"
            box.progress(factor=progress, type="BAR", text=bar)
        if status is not None and status.held:
            _wrapped(box, f"No new jobs: {status.held}", _chars_that_fit(context))
        if status is not None and status.slots:
            _slot_rows(box.box(), status.slots)
        for job_id in status.delivering if status is not None else ():
            # Short enough for a default-width sidebar (the longer wording was clipped there).
            box.label(text=f"Delivering job {job_id[:8]}'s result", icon="EXPORT")
        if status is not None:
            if status.verified is False:
                box.label(text="Not verified yet: no jobs until an admin verifies you", icon="ERROR")
            if status.job_id and not status.slots:
                box.label(text=f"Job {status.job_id}")
                box.label(text=f"Asset {status.asset_cid or '-'}")
                if status.creator:
                    box.operator(
                        "veriframe.block_creator", text="Never take jobs from this creator", icon="CANCEL"
                    ).creator = status.creator
            if status.render_blender and (status.job_id or status.last_render):
                # During a render: the Blender rendering it; after: the one that rendered the last result.
                words = _without_details(f"In {status.render_blender}")
                box.label(text=_shortened(words, _chars_that_fit(context)), icon="BLENDER")
            grid = box.grid_flow(columns=2, even_columns=True)
            grid.label(text=f"Done {status.completed}")
            grid.label(text=f"Failed {status.failed}")
            token = _token(worker)
            box.label(text=f"Earned {token.format(status.reward_total)}")  # this session
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
            signed = status is not None and status.last_receipt_signed
            col.label(
                text="Last render: receipt signed" if signed else "Last render",
                icon="CHECKMARK" if signed else "NONE",
            )
            col.template_icon(icon_value=icon, scale=6.0)

        if status is not None and (status.earnings is not None or status.backend_figures is not None):
            _draw_earnings(layout, status, worker, _chars_that_fit(context))

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
            width = _chars_that_fit(context)
            for line in list(worker.log_lines)[-LOG_LINES_SHOWN:]:
                text = line.text.replace("[Worker] ", "", 1)  # every line has it; the room is scarce
                # Shortened from the end; hover shows the whole line, a click opens it in a popup.
                line_row = logs.row()
                line_row.alignment = "LEFT"
                line_row.operator(
                    "veriframe.log_line",
                    text=_shortened(text, width - 5),  # a button: icon and padding take more room
                    icon="ERROR" if line.level in {"ERROR", "WARNING"} else "DOT",
                    emboss=False,
                ).line = line.text


CLASSES = (VeriFrameHistoryRow, VERIFRAME_UL_history, VIEW3D_PT_veriframe)
