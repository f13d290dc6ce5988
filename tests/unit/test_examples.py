"""The shipped examples render deterministic, moving frames at any even size."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from framefarm.sketch import FrameSource, load_sketch
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("name, channels", [("plasma", 3), ("circles", 3), ("wave_plot", 4)])
def test_example_frames(name: str, channels: int) -> None:
    sketch = load_sketch(str(EXAMPLES / f"{name}.py"))
    assert (sketch.defaults.width, sketch.defaults.height) == (1280, 720)
    source = FrameSource(sketch, width=96, height=64, fps=Fraction(30), total_frames=60)
    # A matplotlib frame is a view of the figure's canvas, valid until the next frame: copy.
    a, b, a_again = (source.frame(i).copy() for i in (0, 20, 0))
    assert a.shape == (64, 96, channels) and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # it moves
    assert np.array_equal(a, a_again)  # and a frame depends only on its index
    fresh = FrameSource(load_sketch(str(EXAMPLES / f"{name}.py")), width=96, height=64,
                        fps=Fraction(30), total_frames=60)
    assert np.array_equal(fresh.frame(20), b)
