"""For the scene-building scripts run inside Blender: stdout carries only their one JSON line.

Blender prints to fd 1 from C (``Info: Saved …``, ``Read blend …``), past Python's ``sys.stdout``; while a
script builds, everything written to fd 1 goes to stderr instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Sends everything written to fd 1 (Blender's C-level prints included) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)  # C stdio buffers still hold Blender's prints
        os.dup2(saved, 1)
        os.close(saved)
