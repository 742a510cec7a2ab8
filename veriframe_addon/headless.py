"""Headless entries inside a Blender binary: ``blender -c veriframe`` and ``blender -b --addons ...``.

Background Blender has no event loop, hence no timers: the worker runs in the foreground until
SIGINT/SIGTERM (or ``--max-jobs``), its loop on a thread of its own while the main thread waits for it and
takes the signals (see ``service.run_off_main_thread``). It only ever starts when asked for by name, so a
plain ``blender -b scene.blend -f 1`` with the add-on enabled renders that scene and nothing else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy

from .operators import build_config, offline_reason
from .preferences import PACKAGE
from .worker.config import WorkerConfig, parse_env_file
from .worker.doctor import run_doctor
from .worker.service import EXIT_CONFIG, argument_parser, run_history, run_pause, run_verify, serve

# Arguments that give background Blender a job of its own: the worker must not take over then.
OTHER_WORK_ARGS = {
    "-f",
    "--render-frame",
    "-a",
    "--render-anim",
    "-P",
    "--python",
    "--python-expr",
    "--python-text",
    "--python-console",
    "-c",
    "--command",
}


def _config(env_file: Path | None) -> WorkerConfig:
    """Preferences where changed (an installed extension has them), the environment and .env for the rest."""
    environ = dict(os.environ)
    if env_file is not None:
        environ = {**parse_env_file(env_file), **environ}
    return build_config(environ=environ)


def cli_command(argv: list[str]) -> int:
    """``blender -c veriframe [--max-jobs N] [--env-file F]``, or ``... doctor``, ``pause``, ``resume``."""
    if argv[:1] == ["history"]:  # no network: the data folder's database
        return run_history(argv[1:], "blender -c veriframe")
    if argv[:1] in (["pause"], ["resume"]):  # no network: a file in the data folder
        return run_pause(argv[1:], "blender -c veriframe", pause=argv[0] == "pause")
    if _refused_offline("blender --online-mode -c veriframe"):
        return EXIT_CONFIG
    if argv[:1] == ["doctor"]:
        return run_doctor(argv[1:], "blender -c veriframe doctor", make_config=_config)
    if argv[:1] == ["verify"]:  # renders with this Blender unless BLENDER_PATH names others
        return run_verify(
            argv[1:], "blender -c veriframe", make_config=lambda environ: build_config(environ=environ)
        )
    return serve(argument_parser("blender -c veriframe").parse_args(argv), make_config=_config)


def _refused_offline(command: str) -> bool:
    """Headless Blender follows the same rule as the GUI: no network while online access is off."""
    reason = offline_reason()
    if reason is None:
        return False
    print(f"VeriFrame: {reason}. Example: {command}", file=sys.stderr, flush=True)
    return True


def requested_by_addons_arg(argv: list[str]) -> bool:
    """True for ``blender -b --addons <this add-on>`` with nothing else for Blender to do."""
    if not bpy.app.background:
        return False
    own = argv[: argv.index("--")] if "--" in argv else argv
    named = False
    for index, arg in enumerate(own):
        if arg == "--addons" and index + 1 < len(own):
            modules = own[index + 1].split(",")
            named = named or any(
                m == PACKAGE or m.endswith("." + PACKAGE.rsplit(".", 1)[-1]) for m in modules
            )
    return named and not any(arg in OTHER_WORK_ARGS for arg in own)


_served = False


def run_from_addons_arg() -> None:
    """Runs the worker until stopped, then lets Blender exit with the worker's exit code.

    Once per process: an extension enabled in the preferences *and* named by ``--addons`` is registered
    twice during start-up, and a stopped worker must not start again.
    """
    global _served
    if _served:
        return
    _served = True
    if _refused_offline("blender -b --online-mode --addons veriframe_addon"):
        sys.exit(EXIT_CONFIG)
    code = serve(argument_parser("blender -b --addons veriframe_addon").parse_args([]), make_config=_config)
    sys.stdout.flush()
    if code:
        sys.exit(code)


_cli_handle = None


def register() -> None:
    global _cli_handle
    if hasattr(bpy.utils, "register_cli_command"):  # Blender 4.2+
        _cli_handle = bpy.utils.register_cli_command("veriframe", cli_command)


def unregister() -> None:
    global _cli_handle
    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
