"""What a sketch returns -> a uint8 HxWx3 or HxWx4 array, with no copy when none is needed."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np

from framefarm.errors import SketchError


def _expected(width: int, height: int) -> str:
    return f"uint8 of shape ({height}, {width}, 3) or ({height}, {width}, 4)"


def _from_array(image: np.ndarray, *, frame: int, width: int, height: int) -> np.ndarray:
    good_shape = image.ndim == 3 and image.shape[:2] == (height, width) and image.shape[2] in (3, 4)
    if image.dtype != np.uint8 or not good_shape:
        raise SketchError(
            f"frame {frame}: render() returned a {image.dtype} array of shape {tuple(image.shape)}; "
            f"expected {_expected(width, height)}", frame=frame)
    return image if image.flags.c_contiguous else np.ascontiguousarray(image)


def _from_pil(image: Any, *, frame: int, width: int, height: int) -> np.ndarray:
    if image.size != (width, height):
        w, h = image.size
        raise SketchError(f"frame {frame}: render() returned a {w}x{h} PIL image; expected "
                          f"{width}x{height} (make it with Image.new(mode, (ctx.width, ctx.height)))",
                          frame=frame)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.asarray(image)


def _from_figure(figure: Any, *, frame: int, width: int, height: int) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas: Any = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    if pixels.shape[:2] != (height, width):
        h, w = pixels.shape[:2]
        raise SketchError(
            f"frame {frame}: render() returned a figure of {w}x{h} pixels; expected {width}x{height} "
            f"(use Figure(figsize=({width}/dpi, {height}/dpi), dpi=dpi))", frame=frame)
    return pixels


def to_array(image: object, *, frame: int, width: int, height: int) -> np.ndarray:
    """A NumPy uint8 HxWx3/HxWx4 array, a PIL.Image, or a matplotlib Figure -> pixels.

    Anything else, or the wrong size, shape or dtype, is a SketchError naming the frame, what it
    got and what was expected.
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, frame=frame, width=width, height=height)
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(image, pil.Image):
        return _from_pil(image, frame=frame, width=width, height=height)
    mpl_figure = sys.modules.get("matplotlib.figure")
    if mpl_figure is not None and isinstance(image, mpl_figure.Figure):
        return _from_figure(image, frame=frame, width=width, height=height)
    raise SketchError(
        f"frame {frame}: render() returned {type(image).__name__}; expected a NumPy "
        f"{_expected(width, height)}, a PIL.Image or a matplotlib Figure", frame=frame)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A frame as a PNG (fast compression: kept frames are for looking at, not archiving)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
