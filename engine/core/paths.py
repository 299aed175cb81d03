"""Where generated data lives (cache) and where datasets are looked for.

The cache root is `$MEDLEY_CACHE` or `./cache`; the CLI's `--cache` flag sets the variable.
The dataset root is `--data` / `$MEDLEY_DATA` / `~/mir_datasets/medley_solos_db` when that exists,
else the built-in demo dataset under the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CacheError

DEFAULT_MEDLEY_HOME = Path("~/mir_datasets/medley_solos_db").expanduser()
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # engine/core/paths.py -> the project


def cache_root() -> Path:
    """The cache folder (created on demand)."""
    root = Path(os.environ.get("MEDLEY_CACHE") or PROJECT_ROOT / "cache").expanduser()
    make_writable_dir(root)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache, created on demand: `cache_dir("features")`."""
    path = cache_root().joinpath(*parts)
    make_writable_dir(path)
    return path


def make_writable_dir(path: Path) -> None:
    """Create folder `path` if needed; CacheError naming it when that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_error(path, exc) from exc


def cache_error(path: Path, exc: OSError) -> CacheError:
    """The message for a cache folder or file that cannot be written."""
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a file is in the way of the folder"
    return CacheError(f"cannot write to the cache folder {path} ({reason}); make it writable, or point "
                      f"MEDLEY_CACHE (CLI: --cache) at a writable folder")


def demo_root(size: str = "default") -> Path:
    """Folder of the built-in demo dataset of the given size ("tiny" or "default")."""
    return cache_root() / "demo" / size


def store_path() -> Path:
    """The SQLite file of the run store."""
    return cache_root() / "runs.sqlite"


def runs_dir() -> Path:
    """Folder holding one sub-folder per run (weights and what prediction needs)."""
    return cache_dir("runs")


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The Medley-solos-DB folder to use: explicit, then $MEDLEY_DATA, then mirdata's default.

    Returns None when none is given and the default does not exist (callers then use the demo).
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MEDLEY_DATA")
    if env:
        return Path(env).expanduser()
    if DEFAULT_MEDLEY_HOME.exists():
        return DEFAULT_MEDLEY_HOME
    return None
