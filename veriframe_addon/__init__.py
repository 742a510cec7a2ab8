"""VeriFrame Worker: a Blender extension that renders VeriFrame network jobs on this machine.

This module stays importable without ``bpy`` so ``python -m veriframe_addon`` and the tests can load the
worker core; the Blender layer (preferences, operators, panel) is registered by ``register()``.
"""

bl_info = {
    "name": "VeriFrame Worker",
    "author": "VeriFrame Worker team",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D Viewport > Sidebar > VeriFrame",
    "description": "Render VeriFrame network jobs on this machine and get paid for them",
    "category": "Render",
}
