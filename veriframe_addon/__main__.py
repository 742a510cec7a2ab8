"""Headless worker: ``python -m veriframe_addon`` in a Python with ``bpy`` (or with ``BLENDER_PATH``)."""

from __future__ import annotations

import sys

from .worker.doctor import run_doctor
from .worker.service import argument_parser, run_history, run_pause, run_verify, serve

PROG = "python -m veriframe_addon"


def main(argv: list[str] | None = None) -> int:
    """``doctor`` checks the setup, ``pause``/``resume`` reach the running worker; else run the worker."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        return run_doctor(argv[1:], f"{PROG} doctor")
    if argv[:1] == ["history"]:
        return run_history(argv[1:], PROG)
    if argv[:1] == ["verify"]:
        return run_verify(argv[1:], PROG)
    if argv[:1] in (["pause"], ["resume"]):
        return run_pause(argv[1:], PROG, pause=argv[0] == "pause")
    return serve(argument_parser(PROG).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
