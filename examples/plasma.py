"""A shader-like plasma drawn with NumPy: sums of sines of x, y, distance and time.

    framefarm render examples/plasma.py -o plasma.mp4
"""

import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 1280, 720, 30, 240


def setup(ctx):
    """Coordinate grids, once per worker process (every frame reuses them)."""
    scale = 8.0 / ctx.height
    y, x = np.mgrid[0:ctx.height, 0:ctx.width].astype(np.float32) * np.float32(scale)
    cx, cy = x.mean(), y.mean()
    return x, y, np.hypot(x - cx, y - cy)


def render(ctx):
    x, y, r = ctx.state
    t = np.float32(ctx.t)
    v = np.sin(x * 1.3 + t * 1.7)
    v += np.sin(y * 1.1 - t * 1.3)
    v += np.sin((x + y) * 0.7 + t)
    v += np.sin(r * 1.9 - t * 2.3)
    v *= np.float32(np.pi / 2)
    rgb = np.empty((ctx.height, ctx.width, 3), np.uint8)
    rgb[..., 0] = 127.5 + 127.5 * np.sin(v)
    rgb[..., 1] = 127.5 + 127.5 * np.sin(v + np.float32(2.1))
    rgb[..., 2] = 127.5 + 127.5 * np.sin(v + np.float32(4.2))
    return rgb
