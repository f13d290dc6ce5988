"""A sketch's assets: the files it reads (textures, data, the scripts it imports), laid out beside
it in every worker and container exactly as beside the user's own file.

Assets are named by `--asset PATH` (FRAMEFARM_ASSETS, comma-separated), by a Python sketch's
module-level `ASSETS = ["data/points.csv", "textures/"]` (read without running the sketch: a
literal list of strings) and by a shader's channel lines, each a file or a folder (every file
under it), relative to the sketch's folder. A sketch with assets is stored as a **bundle**: the
sketch and its assets under `bundles/{sha256}/`, at their paths relative to the sketch, the hash
over every path and content, so the same files upload once; the run's sketch URL names the
sketch inside its bundle, and a job that loads it fetches the whole bundle into one folder
first.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm.storage import Storage

BUNDLES = "bundles/"
"""The storage prefix of sketches stored with their assets."""
MAX_ASSET_FILES = 10_000


def declared_assets(sketch: Path) -> list[str]:
    """A Python sketch's module-level `ASSETS` (a literal list or tuple of strings), a shader's
    channel textures (`// framefarm: iChannel0 = noise.png`), else []."""
    if sketch.suffix != ".py":
        from framefarm.kinds.shader import channels

        try:
            return [name for _, name in channels(sketch.read_text(encoding="utf-8"))]
        except (OSError, UnicodeDecodeError):
            return []
    try:
        tree = ast.parse(sketch.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return []  # loading the sketch says what is wrong with it
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ASSETS"
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise UserError(f"sketch {sketch.name}: ASSETS must be a list of paths (strings) "
                                "relative to the sketch, e.g. ASSETS = ['data/points.csv']")
            return list(value)
    return []


def asset_files(sketch: Path, named: Iterable[str]) -> dict[str, Path]:
    """Each asset file under its path relative to the sketch's folder (folders expanded), for
    the assets `named` (--asset) and those the sketch declares; a missing one is a UserError."""
    folder = sketch.parent.resolve()
    found: dict[str, Path] = {}
    for name in [*named, *declared_assets(sketch)]:
        path = (folder / Path(name).expanduser()).resolve()
        if not path.exists():
            raise UserError(f"asset {name} of sketch {sketch.name} not found (looked for {path}): "
                            "name files or folders beside the sketch")
        try:
            path.relative_to(folder)
        except ValueError:
            raise UserError(f"asset {name} of sketch {sketch.name} is outside the sketch's folder "
                            f"{folder}: assets are laid out beside the sketch, so keep them "
                            "there") from None
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(folder).as_posix()
            if relative != sketch.name:
                found[relative] = file
        if len(found) > MAX_ASSET_FILES:
            raise UserError(f"sketch {sketch.name} names more than {MAX_ASSET_FILES} asset files: "
                            "pack them (a .zip or .npz the sketch opens)")
    return found


def bundle_hash(sketch_name: str, files: dict[str, bytes]) -> str:
    """The bundle's content hash: every relative path and the sha256 of its bytes."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\0".encode())
    digest.update(f"sketch\0{sketch_name}".encode())
    return digest.hexdigest()


def store_bundle(sketch: Path, assets: dict[str, Path], storage: Storage,
                 stored_name: str) -> str:
    """Store the sketch (as `stored_name`) and its assets under bundles/{sha256}/ (once); the
    sketch's storage URL."""
    files = {stored_name: sketch.read_bytes(),
             **{name: path.read_bytes() for name, path in assets.items()}}
    prefix = f"{BUNDLES}{bundle_hash(stored_name, files)}/"
    if not storage.exists(prefix + stored_name):  # the sketch goes last: its presence says done
        for name, data in files.items():
            if name != stored_name:
                storage.put_bytes(prefix + name, data)
        storage.put_bytes(prefix + stored_name, files[stored_name])
    return storage.url_for(prefix + stored_name)


def bundle_of(key: str) -> str | None:
    """The bundle prefix (bundles/{sha256}/) of a sketch stored in one, else None."""
    parts = PurePosixPath(key).parts
    if len(parts) >= 3 and parts[0] == BUNDLES.rstrip("/"):
        return f"{parts[0]}/{parts[1]}/"
    return None


def fetch_bundle(storage: Storage, prefix: str, into: Path) -> None:
    """Every file of the bundle at `prefix`, at its relative path under `into`."""
    for key in storage.list(prefix):
        target = into / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            storage.get_file(key, target)


def parse_assets(text: str) -> list[str]:
    """FRAMEFARM_ASSETS: comma-separated paths."""
    return [part.strip() for part in text.split(",") if part.strip()]


def join_assets(paths: Sequence[str]) -> str:
    for path in paths:
        if "," in path:
            raise UserError(f"asset {path!r}: a comma cannot be in an asset's path (FRAMEFARM_ASSETS "
                            "separates them with commas): rename it or name its folder instead")
    return ",".join(paths)
