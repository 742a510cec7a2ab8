"""Add-on preferences: where the backend and IPFS are, which wallet, which Blenders render.

Saved in userpref.blend as plain bytes, so the private key is NOT a preference: the operator picks where
it comes from (environment, a 0600 key file in the extension's user folder, or typed for this session).
Neither are the IPFS credentials (``IPFS_API_AUTH``, ``PINATA_JWT``): they come from the environment or
the ``.env`` file only.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from .session import KEY_FILE_NAME, PREF_TO_ENV
from .worker.config import DEFAULT_ASSET_CACHE_MB, DEFAULT_KEEP_RESULTS_HOURS
from .worker.limits import (
    DEFAULT_MAX_ASSET_MB,
    DEFAULT_MAX_OUTPUT_MEGAPIXELS,
    DEFAULT_MAX_SAMPLES,
    DEFAULT_MAX_UNPACKED_MB,
)

PACKAGE = __package__ or "veriframe_addon"


def key_file_path() -> Path:
    """The key file in the extension's own user folder (legacy add-ons: Blender's config folder)."""
    try:
        folder = bpy.utils.extension_path_user(PACKAGE, create=True)
    except (ValueError, AttributeError, RuntimeError):  # not installed as an extension
        folder = bpy.utils.user_resource("CONFIG", path="veriframe_addon", create=True)
    return Path(folder) / KEY_FILE_NAME


class RenderBlender(bpy.types.PropertyGroup):
    """One entry of the render-Blender list: a Blender executable, or a Python with the ``bpy`` module."""

    path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Blender",
        description="A Blender executable, or a Python that has the bpy module (e.g. a venv with "
        "pip's bpy package)",
        subtype="FILE_PATH",
        default="",
    )


class VERIFRAME_UL_blenders(bpy.types.UIList):
    """The render Blenders, one row each; each job renders in the one of its file's version."""

    def draw_item(
        self,
        context: bpy.types.Context,
        layout: bpy.types.UILayout,
        data: object,
        item: RenderBlender,
        icon: int,
        active_data: object,
        active_propname: str,
        index: int = 0,
    ) -> None:
        layout.prop(item, "path", text="", emboss=False, icon="BLENDER")


def blender_list(prefs: VeriFramePreferences) -> str:
    """The list as ``BLENDER_PATH`` spells it: paths joined by the OS path separator, blanks left out."""
    return os.pathsep.join(entry.path.strip() for entry in prefs.blenders if entry.path.strip())


def get_preferences(context: bpy.types.Context | None = None) -> VeriFramePreferences | None:
    addon = (context or bpy.context).preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None else None  # type: ignore[return-value]


def preference_values(prefs: VeriFramePreferences | None) -> dict[str, object]:
    """The settings the operator changed; untouched defaults leave the environment's value in force."""
    if prefs is None:
        return {}
    properties = prefs.bl_rna.properties
    values: dict[str, object] = {
        name: getattr(prefs, name)
        for name in PREF_TO_ENV
        if name in properties and getattr(prefs, name) != properties[name].default
    }
    if blenders := blender_list(prefs):
        values["blender_path"] = blenders
    return values


class VeriFramePreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    backend_url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Backend URL",
        description="VeriFrame backend API base, e.g. https://host/api/v1 (empty: "
        "BACKEND_API_URL from the environment)",
        default="",
    )
    wallet_address: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Wallet address", description="Your StarkNet account address (empty: WORKER_ADDRESS)", default=""
    )
    key_source: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Private key",
        description="Where the wallet's private key comes from; it is never stored in the preferences",
        items=[
            ("ENV", "Environment", "WORKER_PRIVATE_KEY from the environment Blender was started with"),
            ("FILE", "Key file", "A file only you can read (0600) in the extension's user folder"),
            ("SESSION", "This session only", "Typed in now, kept in memory until Blender quits"),
            (
                "KEYSTORE",
                "Keystore",
                "An encrypted JSON keystore (as starkli writes); its password typed for this session",
            ),
        ],
        default="ENV",
    )
    keystore_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Keystore",
        description="The encrypted JSON keystore file (Web3 Secret Storage, e.g. from 'starkli signer "
        "keystore new'); its password is never saved",
        subtype="FILE_PATH",
        default="",
    )
    ipfs_api: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="IPFS API",
        description="Multiaddr or URL of the IPFS RPC API (empty: IPFS_API or /ip4/127.0.0.1/tcp/5001)",
        default="",
    )
    ipfs_gateway: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="IPFS gateways",
        description="Path gateways for downloads, a comma-separated list tried in order before the IPFS "
        "API (empty: IPFS_GATEWAY or http://127.0.0.1:8080/ipfs)",
        default="",
    )
    ipfs_provider: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Store results with",
        description="Where rendered results are stored (IPFS_PROVIDER). Credentials are never "
        "preferences: IPFS_API_AUTH and PINATA_JWT come from the environment or .env only",
        items=[
            ("KUBO", "IPFS API (Kubo)", "The IPFS API's add (IPFS_API_AUTH, if it needs one, from the env)"),
            ("PINATA", "Pinata", "Pinata's pinning API; PINATA_JWT from the environment or .env"),
        ],
        default="KUBO",
    )
    pinata_api_url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Pinata API",
        description="Pinata's API base (empty: PINATA_API_URL or https://api.pinata.cloud)",
        default="",
    )
    blenders: bpy.props.CollectionProperty(type=RenderBlender)  # type: ignore[valid-type]
    blender_index: bpy.props.IntProperty(name="Selected Blender", default=0, min=0)  # type: ignore[valid-type]
    poll_interval: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Poll interval",
        description="Seconds between job polls",
        default=10.0,
        min=1.0,
        max=3600.0,
        unit="TIME_ABSOLUTE",
    )
    render_timeout: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Render timeout",
        description="Seconds before a render is stopped",
        default=300.0,
        min=10.0,
        max=86400.0,
        unit="TIME_ABSOLUTE",
    )
    data_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Data folder",
        description="Journal and job folders (empty: VERIFRAME_DATA_DIR or the per-user data folder)",
        subtype="DIR_PATH",
        default="",
    )

    # Safety: how renders of strangers' scenes are contained. Defaults match the worker's own.
    render_sandbox: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Sandbox",
        description="Run each render in an OS sandbox (Linux, bubblewrap): no network, writes only to "
        "the job folder",
        items=[
            ("AUTO", "Where available", "Use bwrap when it works with the render Blender; warn when not"),
            ("BWRAP", "Required", "Refuse to render without the bwrap sandbox"),
            ("OFF", "Off", "Never sandbox renders (the scene checks still apply)"),
        ],
        default="AUTO",
    )
    max_output_megapixels: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Max output (MP)",
        description="Largest output a job may ask for, in megapixels",
        default=DEFAULT_MAX_OUTPUT_MEGAPIXELS,
        min=0.01,
        max=1000.0,
    )
    max_samples: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Max samples",
        description="Most render samples a job may ask for",
        default=DEFAULT_MAX_SAMPLES,
        min=1,
        max=1_000_000,
    )
    max_render_memory_mb: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Max render memory (MB)",
        description="Memory cap of the render process (0: three quarters of this machine's RAM)",
        default=0,
        min=0,
    )
    max_asset_mb: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Max download (MB)",
        description="Largest job file to download",
        default=DEFAULT_MAX_ASSET_MB,
        min=1,
    )
    max_unpacked_mb: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Max unpacked (MB)",
        description="Largest size a job's archive may unpack to",
        default=DEFAULT_MAX_UNPACKED_MB,
        min=1,
    )
    render_device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Render device",
        description="What Cycles renders on (EEVEE and Workbench use Blender's GPU context)",
        items=[
            (
                "AUTO",
                "Best available",
                "The best GPU type Blender lists (OptiX, CUDA, HIP, oneAPI, Metal), else CPU",
            ),
            ("CPU", "CPU", "The processor only"),
            ("OPTIX", "OptiX", "NVIDIA GPUs through OptiX"),
            ("CUDA", "CUDA", "NVIDIA GPUs through CUDA"),
            ("HIP", "HIP", "AMD GPUs"),
            ("ONEAPI", "oneAPI", "Intel GPUs"),
            ("METAL", "Metal", "Apple GPUs"),
        ],
        default="AUTO",
    )
    render_gpus: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="GPUs",
        description="Which GPUs of that type, by Cycles device id or name, comma-separated (empty: all)",
        default="",
    )
    render_threads: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Render threads",
        description="Processor threads a render may use, so this computer stays usable (0: every core)",
        default=0,
        min=0,
        max=1024,
    )
    render_nice: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Render priority (nice)",
        description="How far below your own programs renders run: 0 normal, 19 lowest (Windows: below "
        "normal when above 0)",
        default=10,
        min=0,
        max=19,
    )
    render_slots: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Render slots",
        description="Jobs rendered at once, each on its own GPU (0: one per chosen GPU, else 1)",
        default=0,
        min=0,
        max=16,
    )
    warm_standby: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Warm standby",
        description="Start the next render's Blender (sandboxed, warmed on its own tiny scene) before "
        "its job arrives, so a job does not wait for Blender to start",
        default=True,
    )
    prefetch: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Prefetch the next scene",
        description="While a job renders, download the next job's scene (verified, not claimed) into "
        "the asset cache",
        default=True,
    )
    keep_results_hours: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Keep results (h)",
        description="Hours a finished job's folder (its render and log) is kept before it is removed "
        "(0: at the next clean-up)",
        default=DEFAULT_KEEP_RESULTS_HOURS,
        min=0.0,
    )
    asset_cache_mb: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Asset cache (MB)",
        description="Verified job files kept by CID, so jobs sharing a scene download it once (0: off)",
        default=DEFAULT_ASSET_CACHE_MB,
        min=0,
    )

    # Which jobs, and when: the operator's rules (policy/). Empty or 0: the environment's, else none.
    schedule: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Schedule",
        description="When new jobs are taken, local time, e.g. 'mon-fri 18:00-08:00, sat-sun "
        "00:00-24:00' (empty: SCHEDULE, else always)",
        default="",
    )
    pause_when_busy: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Pause when busy",
        description="Take no new job while other programs use more than this share of the CPU, or "
        "while you use this Blender (0: off)",
        default=0.0,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    busy_idle_minutes: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Idle before a job (min)",
        description="With Pause when busy: minutes without input in Blender before a job starts",
        default=5.0,
        min=0.0,
        max=1440.0,
    )
    min_reward: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Lowest reward",
        description="Skip jobs paying less, in whole tokens, e.g. 0.001 (empty: MIN_REWARD, else 0)",
        default="",
    )
    accept_engines: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engines",
        description="Only jobs for these engines, comma-separated: EEVEE, CYCLES, WORKBENCH (empty: all)",
        default="",
    )
    blocked_creators: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Blocked creators",
        description="Creators' addresses never taken, comma-separated (the panel's 'Never take jobs from "
        "this creator' adds to a list in the data folder)",
        default="",
    )
    token_symbol: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Token", description="The reward token's symbol (empty: TOKEN_SYMBOL, else STRK)", default=""
    )
    token_decimals: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Token decimals", description="Decimals of one whole token", default=18, min=0, max=36
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        col = layout.column(heading="Network")
        col.prop(self, "backend_url")
        col.prop(self, "ipfs_api")
        col.prop(self, "ipfs_gateway")
        col.prop(self, "ipfs_provider")
        col.prop(self, "pinata_api_url")
        col = layout.column(heading="Wallet")
        col.prop(self, "wallet_address")
        col.prop(self, "key_source")
        if self.key_source == "FILE":
            row = col.row()
            row.label(text=str(key_file_path()))
            row.operator("veriframe.save_key_file", text="Save key to file", icon="LOCKED")
        elif self.key_source == "SESSION":
            col.operator("veriframe.enter_session_key", text="Enter key for this session", icon="KEY_HLT")
        elif self.key_source == "KEYSTORE":
            col.prop(self, "keystore_path")
            col.operator("veriframe.enter_keystore_password", text="Enter keystore password", icon="KEY_HLT")
        draw_blender_list(layout.column(), self)
        col = layout.column(heading="Rendering")
        col.prop(self, "poll_interval")
        col.prop(self, "render_timeout")
        col.prop(self, "render_device")
        col.prop(self, "render_gpus")
        col.prop(self, "render_threads")
        col.prop(self, "render_nice")
        col.prop(self, "render_slots")
        col.prop(self, "warm_standby")
        col.prop(self, "prefetch")
        col.prop(self, "data_dir")
        col.prop(self, "asset_cache_mb")
        col.prop(self, "keep_results_hours")
        col = layout.column(heading="Jobs")
        for name in (
            "schedule",
            "pause_when_busy",
            "busy_idle_minutes",
            "min_reward",
            "accept_engines",
            "blocked_creators",
            "token_symbol",
            "token_decimals",
        ):
            col.prop(self, name)
        col = layout.column(heading="Safety")
        for name in (
            "render_sandbox",
            "max_output_megapixels",
            "max_samples",
            "max_render_memory_mb",
            "max_asset_mb",
            "max_unpacked_mb",
        ):
            col.prop(self, name)
        layout.operator("veriframe.check_setup", icon="CHECKMARK")


def draw_blender_list(layout: bpy.types.UILayout, prefs: VeriFramePreferences) -> None:
    """The Blender list with add/remove buttons; an empty list means "the Blender that is running"."""
    layout.label(text="Render Blenders: each job renders in its file's version (none listed: this Blender)")
    row = layout.row()
    row.template_list("VERIFRAME_UL_blenders", "", prefs, "blenders", prefs, "blender_index", rows=3)
    buttons = row.column(align=True)
    buttons.operator("veriframe.blender_add", text="", icon="ADD")
    buttons.operator("veriframe.blender_add_running", text="", icon="BLENDER")
    buttons.operator("veriframe.blender_remove", text="", icon="REMOVE")


CLASSES = (RenderBlender, VERIFRAME_UL_blenders, VeriFramePreferences)
