"""A job's scene before it renders: unpacking the downloaded asset into a .blend (zip and tar, with
size and path caps), the Blender version in its header, and the job's render settings.

Imports ``limits`` and ``errors`` only. What a scene may read is judged inside Blender, by
``render_child.py``.
"""
