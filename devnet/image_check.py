"""Checks that a PNG really shows the sample scene (red cube in the middle, blue sky at the top).

A render that silently failed comes out black, transparent or one flat colour; this tells those apart
from the real picture without a reference image, so it holds across Blender versions and samples.
"""

from __future__ import annotations

from pathlib import Path


def describe_sample_render(path: Path) -> str:
    """Returns a one-line description; raises ``AssertionError`` saying what is wrong with the image."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
        width, height = rgb.size
        centre = rgb.getpixel((width // 2, int(height * 0.62)))
        sky = rgb.getpixel((width // 10, height // 12))
        colours = len(rgb.getcolors(maxcolors=width * height) or [])
    r, g, b = centre
    assert r > g + 40 and r > b + 40, f"centre pixel {centre} is not the red cube"
    sr, _sg, sb = sky
    assert sb > sr + 30, f"top-left pixel {sky} is not the blue sky"
    assert colours > 16, f"only {colours} colours: not a shaded render"
    return f"{width}x{height} PNG, cube {centre}, sky {sky}, {colours} colours"
