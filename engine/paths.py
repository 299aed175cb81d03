"""Where generated data lives (cache) and where datasets are looked for.

The cache root is `$MEDLEY_CACHE` or `./cache`; the CLI's `--cache` flag sets the variable.
The dataset root is `--data` / `$MEDLEY_DATA` / `~/mir_datasets/medley_solos_db` when that exists,
else the built-in demo dataset under the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MEDLEY_HOME = Path("~/mir_datasets/medley_solos_db").expanduser()
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """The cache folder (created on demand)."""
    root = Path(os.environ.get("MEDLEY_CACHE") or PROJECT_ROOT / "cache").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache, created on demand: `cache_dir("features")`."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
