"""A near-static frame: a fixed grid and axis labels, one small marker moving over them.

What data plots, dashboards and motion graphics look like to an encoder: almost every pixel is
the same in every frame, so a key frame costs many times a frame that only moves the marker.

    framefarm render examples/tracker.py -o tracker.mp4
"""

import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 1280, 720, 30, 240
GRID = 40
MARKER = 24


def setup(ctx):
    """The background, drawn once: a light field, a grid and a darker frame."""
    image = np.full((ctx.height, ctx.width, 3), (236, 238, 242), np.uint8)
    image[::GRID, :] = (196, 200, 210)
    image[:, ::GRID] = (196, 200, 210)
    image[::GRID * 5, :] = (150, 156, 170)
    image[:, ::GRID * 5] = (150, 156, 170)
    return image


def render(ctx):
    """The background with the marker on a slow Lissajous path."""
    image = ctx.state.copy()
    span_x, span_y = ctx.width - 2 * MARKER, ctx.height - 2 * MARKER
    x = MARKER + int(span_x * (0.5 + 0.5 * np.sin(0.9 * ctx.t)))
    y = MARKER + int(span_y * (0.5 + 0.5 * np.sin(1.3 * ctx.t + 0.5)))
    yy, xx = np.ogrid[-MARKER:MARKER, -MARKER:MARKER]
    disc = xx * xx + yy * yy <= MARKER * MARKER
    patch = image[y - MARKER:y + MARKER, x - MARKER:x + MARKER]
    patch[disc] = (214, 64, 52)
    return image
