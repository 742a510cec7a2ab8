"""Rendering in a contained Blender: the node's Blenders (probed at start, one chosen per file), the
device each renders on, the sandbox around it, and running ``render_child.py`` in it with limits,
progress and cancel.

Imports ``scene`` (the settings and file versions it renders with), ``config``, ``limits`` and ``errors``.
"""
