"""Each kind of creative code against its own tool's way of making a video (issue 14), at the
same crf and preset: a single-process moderngl loop for a shader (draw, read back, encode with
PyAV in one process) and `ani.save` with matplotlib's FFMpegWriter for an animation script (the
shipped example, run as `python script.py` runs it). framefarm renders the same files unchanged.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from bench.harness import CRF, EXAMPLES, PRESET, Workload


def moderngl_loop(work: Workload, out: Path) -> None:
    """One process: the shader drawn headless frame by frame, each encoded as it comes; Mesa's
    llvmpipe draws on every core, as it does by default (framefarm's workers draw on one each)."""
    import os

    import av

    from framefarm.kinds.shader import ShaderFrames

    os.environ["LP_NUM_THREADS"] = str(os.cpu_count() or 1)
    shader = ShaderFrames((EXAMPLES / work.sketch).read_text(), label=work.sketch,
                          width=work.width, height=work.height)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=work.fps)
        stream.width, stream.height, stream.pix_fmt = work.width, work.height, "yuv420p"
        stream.options = {"crf": str(CRF), "preset": PRESET}
        for i in range(work.frames):
            frame = av.VideoFrame.from_ndarray(shader.draw(i, float(work.fps)), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def ani_save(work: Workload, out: Path) -> None:
    """The animation script as its author runs it: its own `ani.save` (FFMpegWriter, the
    imageio-ffmpeg binary, libx264 at the same crf and preset), in out's folder."""
    import imageio_ffmpeg
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import animation

    matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
    original = animation.Animation.save

    def save(self: animation.Animation, filename: str, *args: object, **kwargs: object) -> None:
        kwargs.pop("writer", None)
        writer = animation.FFMpegWriter(fps=float(kwargs.pop("fps", work.fps)),  # type: ignore[arg-type]
                                        codec="libx264", extra_args=[
                                            "-crf", str(CRF), "-preset", PRESET,
                                            "-pix_fmt", "yuv420p"])
        original(self, str(out.parent / Path(filename).name), writer, **kwargs)  # type: ignore[arg-type]

    animation.Animation.save = save  # type: ignore[method-assign]
    script = EXAMPLES / work.sketch
    runpy.run_path(str(script), run_name="__main__")
    made = out.parent / f"{script.stem}.mp4"
    if made != out:
        shutil.move(made, out)


CONTENDERS = {"moderngl-loop": moderngl_loop, "ani-save": ani_save}
