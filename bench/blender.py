"""Blender scenes: framefarm against Blender's own way of making a video (issue 14).

Run it with the Python that has bpy (the `blender` extra, its own venv: bpy needs NumPy 1.x):

    .venv-blender/bin/python bench/blender.py [--rounds 3] [--quick]

For each scene (built by examples/blender_scene.py), in alternating rounds:

- `blender-own`: one fresh Python opens the scene and runs Blender's own animation render
  (`render.render(animation=True)`, every core, PNG frames), then the frames are encoded with
  PyAV at framefarm's crf and preset (as `ffmpeg -i f_%04d.png` would): Blender's frames +
  ffmpeg, the way a render farm's job ends;
- `framefarm`: `framefarm render scene.blend -o out.mp4`, the scene's own settings, auto
  chunks on every core.

It prints each contender's median wall time, the ratio (blender-own / framefarm, above 1 when
framefarm is faster) and the luma PSNR of framefarm's video against Blender's frames, as a
Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRF, PRESET = 18, "fast"

SCENES = {  # name: examples/blender_scene.py arguments
    "cycles": ["--engine", "CYCLES", "--size", "480x270", "--frames", "24", "--samples", "16"],
    "workbench": ["--engine", "BLENDER_WORKBENCH", "--size", "1280x720", "--frames", "48"],
}
QUICK = {"cycles": ["--size", "240x136", "--frames", "8"], "workbench": ["--frames", "12"]}

BLENDERS_OWN = """
import sys, bpy
from pathlib import Path
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.render.filepath = str(Path(sys.argv[2]) / "f_####")
scene.render.image_settings.file_format = "PNG"
if scene.render.engine == "CYCLES":
    scene.cycles.use_animated_seed = True
bpy.ops.render.render(animation=True)
"""


def encode_frames(folder: Path, out: Path, fps: int) -> None:
    """The PNG frames in `folder`, in order, as one H.264 video (what ffmpeg would make)."""
    import av
    from PIL import Image

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(CRF), "preset": PRESET}
        for index, path in enumerate(sorted(folder.glob("f_*.png"))):
            with Image.open(path) as image:
                rgb = image.convert("RGB")
            if index == 0:
                stream.width, stream.height = rgb.size
            container.mux(stream.encode(av.VideoFrame.from_image(rgb)))
        container.mux(stream.encode(None))


def blender_own(scene: Path, work: Path) -> float:
    """Seconds for Blender's animation render to PNGs in a fresh process plus their encode."""
    frames = work / "frames"
    shutil.rmtree(frames, ignore_errors=True)
    frames.mkdir()
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", BLENDERS_OWN, str(scene), str(frames)], check=True,
                   capture_output=True)
    encode_frames(frames, work / "own.mp4", fps=24)
    return time.perf_counter() - began


def framefarm(scene: Path, work: Path) -> float:
    """Seconds for `framefarm render scene.blend` (its own storage folder each time)."""
    data = work / "ff-data"
    shutil.rmtree(data, ignore_errors=True)
    exe = Path(sys.executable).with_name("framefarm")
    began = time.perf_counter()
    subprocess.run([str(exe), "render", str(scene), "-o", str(work / "ff.mp4"), "--storage",
                    data.as_uri(), "--joblog", f"sqlite:///{data}/joblog.sqlite3"], check=True,
                   capture_output=True, cwd=work)
    return time.perf_counter() - began


def luma_psnr(video: Path, frames: Path) -> float:
    """The lowest luma PSNR of the video's frames against the PNGs."""
    import numpy as np
    from PIL import Image

    from framefarm.video import read_frames

    worst = float("inf")
    for got, path in zip(read_frames(video), sorted(frames.glob("f_*.png")), strict=True):
        with Image.open(path) as image:
            want = np.asarray(image.convert("L"), dtype=np.float64)
        luma = np.asarray(Image.fromarray(got).convert("L"), dtype=np.float64)
        mse = float(np.mean((luma - want) ** 2))
        worst = min(worst, float("inf") if mse == 0 else 10 * np.log10(255**2 / mse))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small scenes, one round")
    parser.add_argument("--only", choices=sorted(SCENES), action="append")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    rows = []
    with tempfile.TemporaryDirectory(prefix="framefarm-bench-blender-") as tmp:
        for name in args.only or SCENES:
            work = Path(tmp) / name
            work.mkdir()
            scene = work / f"{name}.blend"
            subprocess.run([sys.executable, str(ROOT / "examples" / "blender_scene.py"),
                            str(scene), *SCENES[name], *(QUICK[name] if args.quick else [])],
                           check=True, capture_output=True)
            own, ff = [], []
            for _ in range(rounds):  # A B A B: the machine's drift hits both alike
                own.append(blender_own(scene, work))
                ff.append(framefarm(scene, work))
            pairs = [o / f for o, f in zip(own, ff, strict=True)]
            rows.append((name, statistics.median(own), statistics.median(ff),
                         statistics.median(pairs), luma_psnr(work / "ff.mp4", work / "frames")))
            print(f"{name}: blender-own {own}, framefarm {ff}", file=sys.stderr)
    print("| scene | blender-own (s) | framefarm (s) | ratio | framefarm's luma PSNR vs Blender's frames |")
    print("| --- | --- | --- | --- | --- |")
    for name, own_s, ff_s, pair, psnr in rows:
        print(f"| {name} ({' '.join(SCENES[name][1::2][:1])}) | {own_s:.1f} | {ff_s:.1f} | "
              f"{pair:.2f}x | {psnr:.1f} dB (lowest frame) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
