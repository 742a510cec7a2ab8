"""Build-time helpers for build.py: stdlib only, never shipped in the extension zip."""
