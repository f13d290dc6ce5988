"""Dozens of translucent circles drifting on Lissajous paths, drawn with Pillow.

    framefarm render examples/circles.py -o circles.mp4
"""

import math

from PIL import Image, ImageDraw

WIDTH, HEIGHT, FPS, FRAMES = 1280, 720, 30, 240
SEED = 7
COUNT = 48


def setup(ctx):
    """Each circle's colour, size and path, drawn once from the sketch's seeded RNG."""
    rng = ctx.rng
    return [
        {
            "color": (*(int(c) for c in rng.integers(60, 256, 3)), 150),
            "radius": float(rng.uniform(0.03, 0.12)) * ctx.height,
            "freq": rng.uniform(0.05, 0.35, 2),
            "phase": rng.uniform(0, 2 * math.pi, 2),
        }
        for _ in range(COUNT)
    ]


def render(ctx):
    image = Image.new("RGB", (ctx.width, ctx.height), (12, 14, 28))
    draw = ImageDraw.Draw(image, "RGBA")
    for c in ctx.state:
        fx, fy = c["freq"]
        px, py = c["phase"]
        x = ctx.width * (0.5 + 0.42 * math.sin(2 * math.pi * fx * ctx.t + px))
        y = ctx.height * (0.5 + 0.40 * math.sin(2 * math.pi * fy * ctx.t + py))
        r = c["radius"] * (0.8 + 0.2 * math.sin(ctx.t * 2 + px))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=c["color"])
    return image
