"""The pause switch: a file in the data folder's ``control/`` folder that only this user can write.

``python -m veriframe_addon pause`` (or the panel's Pause) sets it and ``resume`` clears it; the running
worker looks at it before every new job, so pause and resume reach it with no port and no signal. The
folder is 0700 and the worker honours a flag only when its own user owns it, so another local user can
neither pause a node nor keep it paused, and nothing reaches it from another host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class PauseFlag:
    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "control"
        self.path = self.folder / "paused"

    def set(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_set(self) -> bool:
        """True when the flag exists and belongs to this user (POSIX; on Windows when it exists)."""
        try:
            info = self.path.stat()
        except OSError:
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        return not hasattr(os, "getuid") or info.st_uid == os.getuid()
