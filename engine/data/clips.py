"""What a dataset is made of, whatever its layout: clips, the problems met while reading it,
and what a file's header says (no audio decoded). engine.data.dataset (Medley-solos-DB) and
engine.data.folders (a labelled folder or CSV of the user's own) both build these."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.errors import DatasetError

CLIP_SECONDS = 131072 / 44100  # every official clip: 131,072 samples at 44.1 kHz (2.972 s); the window of a long file


@dataclass(frozen=True)
class Clip:
    """One clip: a whole file, or the window [start, start + seconds) of a longer one.

    `label` is the class id, an index into the dataset's `class_names` (Medley-solos-DB:
    engine.core.labels.CLASS_NAMES). `song_id`: Medley-solos-DB's song; `group`: the user's
    recording/session group (every window of a file shares the file's group and split).
    """

    path: Path
    subset: str
    label: int
    uuid: str
    song_id: int | None
    start: float = 0.0  # seconds into the file
    seconds: float | None = None  # None: the whole file
    group: str = ""


@dataclass(frozen=True)
class Problem:
    """A clip, CSV row or folder that was skipped (or, for a label clash, read another way), and
    why. `kind` names the engine.core.errors class of the problem ("AudioError",
    "UnsafePath", ...; "" for Medley-solos-DB's own checks)."""

    file: str
    reason: str
    kind: str = ""


@dataclass(frozen=True)
class Header:
    """What an audio header and the file system say about one file (no audio decoded)."""

    size: int  # bytes
    mtime_ns: int
    sample_rate: int = 0  # Hz
    frames: int = 0  # samples per channel
    channels: int = 0

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def stat_header_or_problem(path: Path) -> Header | str:
    """Size and mtime of an existing non-empty file, or why it cannot be used."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "file is missing"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.st_size == 0:
        return "file is empty (0 bytes)"
    return Header(stat.st_size, stat.st_mtime_ns)


def read_csv_rows(csv_path: Path, kind: str, required: Sequence[str], expected: str, *, lower: bool = False,
                  strip_values: bool = False) -> list[tuple[int, dict[str, str]]]:
    """The rows of a dataset's CSV as (line number, {column: value}), column names stripped (and
    lower-cased with `lower`; values stripped with `strip_values`). DatasetError naming the `kind`
    of CSV ("metadata", "labels") and what is wrong: not UTF-8 text, unreadable, empty, NUL bytes,
    a `required` column missing (`expected`: the columns it should have, in words), not valid CSV."""
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{kind} CSV {csv_path} is not a text CSV file (not UTF-8: {exc.reason})") from exc
    except OSError as exc:
        raise DatasetError(f"{kind} CSV {csv_path} cannot be read: {exc.strerror or exc}") from exc
    if not text.strip():
        raise DatasetError(f"{kind} CSV {csv_path} is empty; expected columns {expected}")
    if "\0" in text:
        raise DatasetError(f"{kind} CSV {csv_path} is not a text CSV file (it contains NUL bytes)")
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = [(name or "").strip() for name in (reader.fieldnames or [])]
        columns = [name.lower() for name in columns] if lower else columns
        missing = [name for name in required if name not in columns]
        if missing:
            raise DatasetError(f"{kind} CSV {csv_path} lacks column(s) {', '.join(repr(m) for m in missing)}; "
                               f"expected {expected}")
        reader.fieldnames = columns
        return [(reader.line_num, {k: (v or "").strip() if strip_values else (v or "") for k, v in row.items() if k})
                for row in reader]
    except csv.Error as exc:
        raise DatasetError(f"{kind} CSV {csv_path} is not a valid CSV file: {exc}") from exc
