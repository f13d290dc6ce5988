"""GLSL fragment shaders: a Shadertoy shader pasted as it is, or a plain GLSL program.

A Shadertoy shader defines `mainImage(out vec4 fragColor, in vec2 fragCoord)` and uses the
uniforms Shadertoy declares for it, which are declared here: `iResolution` (the frame's size),
`iTime` (frame / fps), `iTimeDelta` (1 / fps), `iFrame`, `iFrameRate`, `iMouse` (at rest: 0)
and `iDate`; `iChannel0..3` are textures from image files beside the shader, named in it by a
comment line `// framefarm: iChannel0 = textures/noise.png` (an asset, so it travels with the
shader to every job), black when none is named. A plain program
(`#version …` with its own `void main` writing an `out vec4`) gets whichever of those uniforms
it declares.

Frames are drawn headless with moderngl on an EGL context (Mesa's llvmpipe on a machine without
a GPU; `pip install 'framefarm[shader]'`, and Debian's libegl1 libegl-mesa0 libgl1-mesa-dri).
The context is made on the first frame a process draws, so every worker process has its own.
Mesa rasterizes in the drawing thread (LP_NUM_THREADS=0 unless set): workers are the
parallelism, and a process holds no renderer threads a fork would copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from framefarm.errors import MissingExtraError, UserError

if TYPE_CHECKING:
    from framefarm.sketch import FrameContext, Sketch

_VERTEX = """#version 330
in vec2 framefarm_corner;
void main() { gl_Position = vec4(framefarm_corner, 0.0, 1.0); }
"""

_SHADERTOY_HEAD = """#version 330
uniform vec3 iResolution;
uniform float iTime;
uniform float iTimeDelta;
uniform float iFrameRate;
uniform int iFrame;
uniform vec4 iMouse;
uniform vec4 iDate;
uniform vec3 iChannelResolution[4];
uniform sampler2D iChannel0;
uniform sampler2D iChannel1;
uniform sampler2D iChannel2;
uniform sampler2D iChannel3;
out vec4 framefarm_FragColor;
"""

_SHADERTOY_MAIN = """
void main() {
    vec4 color = vec4(0.0, 0.0, 0.0, 1.0);
    mainImage(color, gl_FragCoord.xy);
    framefarm_FragColor = vec4(color.rgb, 1.0);
}
"""

_MAIN_IMAGE = re.compile(r"\bvoid\s+mainImage\s*\(")
_MAIN = re.compile(r"\bvoid\s+main\s*\(")
_VERSION = re.compile(r"^\s*#\s*version\b", re.MULTILINE)
CHANNEL = re.compile(r"^\s*//\s*framefarm:\s*iChannel([0-3])\s*=\s*(\S+)\s*$", re.MULTILINE)
"""A texture for one of Shadertoy's four channels: `// framefarm: iChannel0 = noise.png`."""
_DRIVER_LINE = re.compile(r"^\s*\d+:(\d+)\(\d+\):\s*(.*)$|^\s*ERROR:\s*\d+:(\d+):\s*(.*)$")


def fragment_source(source: str) -> str:
    """The fragment shader to compile: a Shadertoy shader wrapped with its uniforms and a
    `main` (with `#line 1`, so the driver's line numbers are the user's), or a plain program
    as it is."""
    if _MAIN_IMAGE.search(source):
        return f"{_SHADERTOY_HEAD}#line 1\n{source}\n{_SHADERTOY_MAIN}"
    return source


def compile_error(label: str, log: str) -> str:
    """One line from the driver's compile log: the file, the first error's line and message."""
    for raw in log.splitlines():
        found = _DRIVER_LINE.match(raw)
        if found and "error" in raw.lower():
            line = found.group(1) or found.group(3)
            message = (found.group(2) or found.group(4) or "").strip()
            return f"shader {label} does not compile: line {line}: {message}"
    first = next((x.strip() for x in log.splitlines() if x.strip()), "no message")
    return f"shader {label} does not compile: {first}"


class ShaderFrames:
    """One shader's program on this process's own EGL context, drawing frames of one size."""

    def __init__(self, source: str, *, label: str, width: int, height: int,
                 folder: Path | None = None) -> None:
        os.environ.setdefault("LP_NUM_THREADS", "0")
        try:
            import moderngl
        except ImportError as exc:
            raise MissingExtraError(f"shader {label}", "shader") from exc
        headless: dict[str, Any] = {"standalone": True, "backend": "egl"}  # no window, no X
        try:
            self.gl = moderngl.create_context(**headless)
        except Exception as exc:  # no EGL library or driver on this machine
            raise UserError(f"shader {label}: no headless OpenGL here ({exc}): install Debian's "
                            "libegl1 libegl-mesa0 libgl1-mesa-dri (or your GPU's EGL driver)") \
                from None
        try:
            self.program = self.gl.program(vertex_shader=_VERTEX,
                                           fragment_shader=fragment_source(source))
        except moderngl.Error as exc:
            raise UserError(compile_error(label, str(exc))) from None
        corners = np.array([-1.0, -1.0, 3.0, -1.0, -1.0, 3.0], dtype="f4")  # one big triangle
        self.vertices = self.gl.buffer(corners.tobytes())
        self.array = self.gl.vertex_array(self.program, [(self.vertices, "2f",
                                                          "framefarm_corner")])
        self.target = self.gl.simple_framebuffer((width, height), components=4)
        self.width, self.height = width, height
        self._set("iResolution", (float(width), float(height), 1.0))
        self._set("iMouse", (0.0, 0.0, 0.0, 0.0))
        self.textures = []
        sizes = [(0.0, 0.0, 0.0)] * 4
        for channel, name in channels(source):
            pixels = _image(folder or Path.cwd(), name, label)
            texture = self.gl.texture((pixels.shape[1], pixels.shape[0]), 4, pixels.tobytes())
            texture.repeat_x = texture.repeat_y = True
            texture.build_mipmaps()
            texture.use(location=channel)
            self.textures.append(texture)
            self._set(f"iChannel{channel}", channel)
            sizes[channel] = (float(pixels.shape[1]), float(pixels.shape[0]), 1.0)
        self._set("iChannelResolution", sizes)

    def _set(self, name: str, value: Any) -> None:
        if name in self.program:  # uniforms the shader does not use are compiled away
            uniform: Any = self.program[name]
            uniform.value = value

    def draw(self, frame: int, fps: float) -> np.ndarray:
        """Frame `frame` as a top-down HxWx3 uint8 array."""
        self._set("iTime", frame / fps)
        self._set("iTimeDelta", 1.0 / fps)
        self._set("iFrameRate", fps)
        self._set("iFrame", frame)
        self._set("iDate", (2000.0, 0.0, 1.0, frame / fps))
        self.target.use()
        self.target.clear(0.0, 0.0, 0.0, 1.0)
        self.array.render()
        pixels = np.frombuffer(self.target.read(components=3), dtype=np.uint8)
        return np.ascontiguousarray(pixels.reshape(self.height, self.width, 3)[::-1])


def channels(source: str) -> list[tuple[int, str]]:
    """The textures the shader names for its channels: (channel, path beside the shader)."""
    return [(int(found.group(1)), found.group(2)) for found in CHANNEL.finditer(source)]


def _image(folder: Path, name: str, label: str) -> np.ndarray:
    """An image file as RGBA rows bottom-up (OpenGL's texture origin)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(folder / name) as image:
            pixels = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"shader {label}: texture {name} cannot be read ({exc}): put the image "
                        "beside the shader, as its framefarm: iChannel line names it") from None
    return np.ascontiguousarray(pixels[::-1])


def check_source(source: str, label: str) -> None:
    """Refuse a file that is no fragment shader (UserError), before any GL is made."""
    if not _MAIN_IMAGE.search(source) and not (_MAIN.search(source) and _VERSION.search(source)):
        raise UserError(f"shader {label} has neither mainImage(out vec4, in vec2) (Shadertoy) "
                        "nor a #version line and void main(): paste a Shadertoy shader or a "
                        "GLSL fragment program")


def load(path: Path, *, label: str, display_name: str | None) -> Sketch:
    """The shader at `path` as a Sketch: its GL program is made on the first frame (or the
    probe's) in each process, per size, and compile errors are one line naming the file."""
    from framefarm.sketch import Sketch, SketchDefaults

    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"shader {label} cannot be read ({exc}): give a readable .frag "
                        "file") from None
    check_source(source, label)
    made: dict[tuple[int, int], ShaderFrames] = {}

    def render(ctx: FrameContext) -> np.ndarray:
        size = (ctx.width, ctx.height)
        if size not in made:
            made[size] = ShaderFrames(source, label=label, width=ctx.width, height=ctx.height,
                                      folder=path.parent)
        return made[size].draw(ctx.frame, ctx.fps)

    def setup(ctx: FrameContext) -> None:
        # Compile now, once per process: a broken shader fails before its first frame.
        render(ctx)

    module = ModuleType(f"framefarm_shader_{path.stem}")
    module.__file__ = str(path)
    return Sketch(location=str(path), render=render, setup=setup, defaults=SketchDefaults(),
                  seed=0, source=path, module=module, display_name=display_name, kind="shader")
