"""Headless worker: ``python -m veriframe_addon`` in a Python with ``bpy`` (or with ``BLENDER_PATH``)."""

from __future__ import annotations

from .worker.service import argument_parser, serve


def main(argv: list[str] | None = None) -> int:
    return serve(argument_parser("python -m veriframe_addon").parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
