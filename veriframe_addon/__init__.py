"""VeriFrame Worker: a Blender extension that renders VeriFrame network jobs on this machine.

``register()`` only registers: the preferences, operators and the sidebar panel, the ``blender -c
veriframe`` command, and a handler that keeps the panel live across File > Open. It starts the worker
itself only for ``blender -b --addons veriframe_addon``. This module stays importable without ``bpy``,
so ``python -m veriframe_addon`` and the tests can load the worker core.
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


def _classes() -> tuple:
    from . import operators, panel, preferences

    return (*preferences.CLASSES, *operators.CLASSES, *panel.CLASSES)


def _after_file_load(_unused: object = None) -> None:
    """File > Open ends every modal operator; re-attach the panel's timer if the worker still runs."""
    import bpy

    from .operators import SESSION, ensure_monitor

    if SESSION.busy:
        bpy.app.timers.register(lambda: ensure_monitor() or None, first_interval=0.2, persistent=True)


def register() -> None:
    import sys

    import bpy

    from . import headless, panel

    for cls in _classes():
        bpy.utils.register_class(cls)
    panel.register_properties()
    headless.register()
    persistent = bpy.app.handlers.persistent(_after_file_load)
    if persistent not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(persistent)
    if headless.requested_by_addons_arg(sys.argv):
        headless.run_from_addons_arg()


def unregister() -> None:
    """Stops the worker (killing a render child) before the code it runs goes away."""
    import bpy

    from . import headless, operators, panel

    operators.SESSION.stop_worker(now=True, wait=30.0)
    for handler in list(bpy.app.handlers.load_post):
        if getattr(handler, "__name__", "") == _after_file_load.__name__:
            bpy.app.handlers.load_post.remove(handler)
    headless.unregister()
    operators.free_previews()
    panel.unregister_properties()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
