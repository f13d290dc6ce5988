"""A travelling wave packet plotted with matplotlib: one Figure built in setup, updated per frame.

    pip install 'framefarm[matplotlib]'
    framefarm render examples/wave_plot.py -o wave.mp4
"""

import numpy as np
from matplotlib.figure import Figure

WIDTH, HEIGHT, FPS, FRAMES = 1280, 720, 30, 120
DPI = 100


def setup(ctx):
    """The figure, sized to exactly ctx.width x ctx.height pixels, and its line."""
    fig = Figure(figsize=(ctx.width / DPI, ctx.height / DPI), dpi=DPI)
    ax = fig.add_subplot()
    x = np.linspace(0, 4 * np.pi, 800)
    (line,) = ax.plot(x, np.zeros_like(x), lw=2, color="tab:blue")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(-1.2, 1.2)
    ax.set_xlabel("x")
    ax.set_ylabel("amplitude")
    ax.grid(alpha=0.3)
    title = ax.set_title("travelling wave packet, t =  0.00 s")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.1, top=0.92)
    return fig, line, title, x


def render(ctx):
    fig, line, title, x = ctx.state
    centre = 2 * np.pi + 1.5 * np.pi * np.sin(ctx.t * 0.8)
    line.set_ydata(np.sin(3 * x - 4 * ctx.t) * np.exp(-((x - centre) ** 2) / 4))
    title.set_text(f"travelling wave packet, t = {ctx.t:5.2f} s")
    return fig
