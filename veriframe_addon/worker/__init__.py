"""The worker core: plain Python, no ``bpy`` anywhere below this folder.

It runs in Blender's Python (driven by the extension's timer through a thread) and in any Python that
has its dependencies (tests, ``python -m veriframe_addon``). ``Worker`` in ``loop.py`` is the entry.
"""
