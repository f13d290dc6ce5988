"""Build a small Blender scene to render with framefarm: `python examples/blender_scene.py scene.blend`.

Run it with the Python that has the `blender` extra (bpy; its own venv, as bpy needs NumPy 1.x):

    python -m venv .venv-blender && . .venv-blender/bin/activate
    pip install -e '.[blender]'
    python examples/blender_scene.py scene.blend            # Cycles on the CPU, 16 samples
    python examples/blender_scene.py scene.blend --engine BLENDER_WORKBENCH
    framefarm render scene.blend -o scene.mp4

The scene: a ground plane, a cube that turns and rises, a torus orbiting it, a sun and a
camera, 640x360 at 24 fps, frames 1-48. Everything framefarm needs comes from the scene
itself: its size (resolution x percentage), its fps (fps / fps_base), its frame range and step.
"""

from __future__ import annotations

import argparse
import math
import sys


def build(path: str, *, engine: str = "CYCLES", samples: int = 16, frames: int = 48,
          width: int = 640, height: int = 360, fps: int = 24) -> None:
    """Write the scene to `path` (a .blend file)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = engine
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.frame_start, scene.frame_end, scene.frame_step = 1, frames, 1
    if engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False  # OpenImageDenoise differs between CPUs
    else:
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "MATERIAL"

    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.45, 0.6, 1.0)
    scene.world = world

    def material(name: str, rgb: tuple[float, float, float]) -> bpy.types.Material:
        made = bpy.data.materials.new(name)
        made.use_nodes = True
        made.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*rgb, 1.0)
        made.diffuse_color = (*rgb, 1.0)  # what Workbench shows
        return made

    bpy.ops.mesh.primitive_plane_add(size=12.0)
    bpy.context.object.data.materials.append(material("ground", (0.8, 0.78, 0.7)))
    bpy.ops.mesh.primitive_cube_add(size=1.6, location=(0.0, 0.0, 0.8))
    cube = bpy.context.object
    cube.data.materials.append(material("cube", (0.9, 0.3, 0.15)))
    bpy.ops.mesh.primitive_torus_add(major_radius=0.5, minor_radius=0.18, location=(2.4, 0.0, 0.9))
    torus = bpy.context.object
    torus.data.materials.append(material("torus", (0.15, 0.5, 0.9)))

    for frame in (1, frames):  # keyframes: the cube turns a quarter and rises, the torus orbits
        done = (frame - 1) / max(frames - 1, 1)
        cube.rotation_euler = (0.0, 0.0, done * math.pi / 2)
        cube.location.z = 0.8 + done * 0.6
        cube.keyframe_insert("rotation_euler", frame=frame)
        cube.keyframe_insert("location", frame=frame)
    orbit = bpy.data.objects.new("orbit", None)
    scene.collection.objects.link(orbit)
    torus.parent = orbit
    for frame in (1, frames):
        orbit.rotation_euler = (0.0, 0.0, (frame - 1) / max(frames - 1, 1) * 2 * math.pi)
        orbit.keyframe_insert("rotation_euler", frame=frame)
    for action_owner in (cube, orbit):  # constant speed, no ease in or out
        for curve in _fcurves(action_owner):
            for point in curve.keyframe_points:
                point.interpolation = "LINEAR"

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", type="SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    camera.location = (6.5, -6.5, 4.5)
    camera.rotation_euler = (math.radians(65), 0.0, math.radians(45))
    scene.collection.objects.link(camera)
    scene.camera = camera
    bpy.ops.wm.save_as_mainfile(filepath=path)


def _fcurves(owner: object) -> list[object]:
    """The object's animation curves (Blender 5's layered actions keep them per channel bag)."""
    action = owner.animation_data.action  # type: ignore[attr-defined]
    if hasattr(action, "fcurves"):
        return list(action.fcurves)
    return [curve for layer in action.layers for strip in layer.strips
            for bag in strip.channelbags for curve in bag.fcurves]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a small Blender scene for framefarm.")
    parser.add_argument("path", help="the .blend file to write")
    parser.add_argument("--engine", default="CYCLES", choices=["CYCLES", "BLENDER_WORKBENCH"])
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples a pixel")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    build(args.path, engine=args.engine, samples=args.samples, frames=args.frames,
          width=int(width), height=int(height), fps=args.fps)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
