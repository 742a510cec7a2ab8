"""Headless worker: ``python -m veriframe_addon`` in a Python with ``bpy`` (or with ``BLENDER_PATH``)."""

from __future__ import annotations

import sys

from .worker.doctor import run_doctor
from .worker.service import argument_parser, serve

PROG = "python -m veriframe_addon"


def main(argv: list[str] | None = None) -> int:
    """``doctor [--env-file F]`` checks the setup; anything else runs the worker, as it always has."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        return run_doctor(argv[1:], f"{PROG} doctor")
    return serve(argument_parser(PROG).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
