"""Disk space in words: how much is free where, whether an error means a full disk, and one
message for it (which folder, how much is free, what the step needed, what to do); files
written whole or not at all (`atomic_write`: a temporary file in the same folder, then
os.replace; the temporary file is removed on any failure). Sizes are bytes throughout.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Callable

from .errors import CacheError, DiskFull

SPACE_MARGIN_BYTES = 16 * 1024 * 1024  # kept free beyond a step's estimate (the store, logs, other writers)
REMEDY = "free space (delete runs you no longer need, or other files on that disk), then Resume"
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_FULL_WORDS = ("no space left", "disk is full", "database or disk is full", "disk quota exceeded",
               "file too large", "unexpected pos")  # the last: torch's zip writer after a short write


def format_bytes(n: float | None) -> str:
    """Bytes for people: '512 B', '12.5 MB', '3.1 GB' (powers of 1000, as disks are sold)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def free_bytes(folder: Path | str) -> int | None:
    """Bytes free to this user on the disk holding `folder` (its nearest existing parent when
    it does not exist yet); None when that cannot be told."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def folder_bytes(folder: Path | str) -> int:
    """Bytes the files under `folder` take (0 when it does not exist; unreadable files skipped)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc` (or an exception it was raised from) means the disk or the database is
    full: OSError ENOSPC / EDQUOT / EFBIG, SQLite's 'database or disk is full' (SQLITE_FULL),
    or a library's wrapped message saying so (torch's writer reports 'unexpected pos')."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull):
            return True
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, (OSError, sqlite3.Error, RuntimeError)) and any(
                words in str(exc).lower() for words in _FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(folder: Path | str, step: str, needed: int | None = None,
                    exc: BaseException | None = None) -> DiskFull:
    """The message for a full disk: 'no space left on the disk holding <folder> while <step>:
    <free> free, this step needs about <needed>; free space ..., then Resume'."""
    free = free_bytes(folder)
    need = f", this step needs about {format_bytes(needed)}" if needed else ""
    cause = f" ({type(exc).__name__}: {str(exc)[:200]})" if exc is not None else ""
    return DiskFull(f"no space left on the disk holding {folder} while {step}: {format_bytes(free)} free{need}; "
                    f"{REMEDY}{cause}")


def write_error(path: Path, step: str, exc: BaseException, needed: int | None = None) -> CacheError:
    """A failed write of `path` in words: DiskFull (disk_full_error) when the disk is full, else
    a CacheError naming the file and the reason."""
    if is_disk_full(exc):
        return disk_full_error(path.parent, step, needed, exc)
    reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {str(exc)[:200]}"
    return CacheError(f"cannot write {path} while {step} ({reason}); make the folder writable, or point "
                      f"MEDLEY_CACHE (CLI: --cache) at a writable folder, then Resume")


def check_space(folder: Path | str, needed: int, step: str, margin: int = SPACE_MARGIN_BYTES) -> None:
    """Raise DiskFull, before anything is written, when the disk holding `folder` has less than
    `needed` + `margin` bytes free (no check when the free space cannot be told)."""
    free = free_bytes(folder)
    if free is not None and free < needed + margin:
        raise DiskFull(f"not enough space on the disk holding {folder} to start {step}: {format_bytes(free)} free, "
                       f"this step needs about {format_bytes(needed)} plus {format_bytes(margin)} to spare; "
                       f"{REMEDY}")


def temp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique per process and thread ('.model.pt.<pid>.<tid>.tmp')."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None], step: str, needed: int | None = None) -> None:
    """Write `path` whole or not at all: `write(tmp)` fills a temporary file beside it, which
    then replaces `path` (os.replace). On any failure the temporary file is removed, `path`
    keeps its previous content, and the error is raised in words (`write_error`)."""
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        raise write_error(path, step, exc, needed) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
