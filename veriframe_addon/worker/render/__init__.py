"""Rendering in a contained Blender: finding the render Blender, the sandbox around it, and running
``render_child.py`` in it with limits, progress and cancel.

Imports ``scene`` (the settings it renders with), ``limits`` and ``errors``.
"""
