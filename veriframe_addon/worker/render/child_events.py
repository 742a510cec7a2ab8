"""The render child's event lines, ``@@VERIFRAME:<token> {json}`` (``render_child.py`` writes them).

The token is the child's own, random per launch: a scene that prints a look-alike line cannot forge an
event without it. Both readers, the renderer's watch over a render and a standby's wait for its
``parked`` line, parse them here.
"""

from __future__ import annotations

import json


def child_event(line: str, token: str) -> dict | None:
    """The event on ``line`` if it is one of ``token``'s child's, else None (any other output)."""
    marker = f"@@VERIFRAME:{token} "
    if not line.startswith(marker):
        return None
    try:
        event = json.loads(line[len(marker) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
