"""A typical matplotlib animation, unchanged: a sine curve drawn one point per frame (a stateful
update: each frame appends to the line), saved with ani.save. framefarm renders it as it is:

    framefarm render examples/growing_line.py -o growing_line.mp4
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation

fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.set_xlim(0, 4 * np.pi)
ax.set_ylim(-1.2, 1.2)
ax.set_title("sin(x), one point a frame")
(line,) = ax.plot([], [], lw=2, color="tab:blue")
(dot,) = ax.plot([], [], "o", color="tab:red")
xs, ys = [], []


def init():
    line.set_data([], [])
    dot.set_data([], [])
    return line, dot


def update(frame):
    x = frame * 4 * np.pi / 119
    xs.append(x)
    ys.append(np.sin(x))
    line.set_data(xs, ys)
    dot.set_data([x], [np.sin(x)])
    return line, dot


ani = FuncAnimation(fig, update, frames=120, init_func=init, blit=True, interval=33)

if __name__ == "__main__":
    ani.save("growing_line.mp4", fps=30, dpi=100)
    plt.show()
