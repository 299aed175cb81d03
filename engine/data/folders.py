"""A labelled dataset of the user's own (issue #27): a folder of class folders, or a CSV.

Two layouts, beside Medley-solos-DB's (engine.data.dataset):

- "folders": one sub-folder per class (the audiofolder / ImageFolder convention; the folder
  names are the labels, files may sit in nested folders below them), optionally under a
  `training/ validation/ test/` level (also spelled train/, val/, valid/, dev/, testing/);
- "csv": a CSV file with columns `path,label` and optional `split` and `group` (clips of one
  recording, session or player, kept in one split); paths relative to the CSV's folder, and a
  path that leads outside that folder is refused.

Reading is two steps. `scan` lists the labelled files without reading any audio (cheap: the
class names come from it, and a JobManager asks it when it queues a run). `load_custom` then
reads every header (soundfile.info: never the samples), leaves out what cannot be used (each a
`Problem` whose `kind` names its engine.core.errors class), cuts files longer than one clip
into consecutive CLIP_SECONDS windows (every window keeps its file's group and split), and
makes the split where none is given: stratified by class, group-aware, seeded (`make_split`),
stored beside the data (or in the cache when that folder is read-only).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import soundfile as sf

from ..core.errors import (AudioError, AudioTooLong, DatasetError, DuplicateClip, EmptyClass, LabelClash,
                           TooFewClasses, UnsafePath)
from ..core.labels import MIN_CLASSES, SUBSETS
from .audio import max_audio_seconds, window_starts
from .clips import CLIP_SECONDS, Clip, Header, Problem, read_csv_rows, stat_header_or_problem
from .splits import (SPLIT_FILE, SPLIT_NAMES, SPLIT_SEED, SPLIT_SHARE, cached_split_file, make_split, read_split_file,
                     write_split_file)

Progress = Callable[[int, int, str], None]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
CSV_COLUMNS = ("path", "label")  # required; "split" and "group" are optional
MAX_CLASSES = 1000  # a CSV with more distinct labels than this is not a label column
_WORKERS = 8  # header reads wait on the disk, not the CPU


@dataclass(frozen=True)
class Entry:
    """One labelled file before any audio is read. `split`: given by the data, else None."""

    path: Path
    rel: str  # path relative to the dataset's root, "/"-separated: its name in messages and ids
    label: str
    split: str | None
    group: str
    where: str  # what a message names: the relative path, or "labels.csv line 3"


@dataclass
class Scan:
    """The labelled files of a custom dataset and its classes, found without reading audio."""

    layout: str  # "folders" | "csv"
    root: Path  # the folder paths are relative to
    entries: list[Entry]
    class_names: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    csv_path: Path | None = None


@dataclass
class Loaded:
    """What load_custom returns to engine.data.dataset: the kept clips, their file headers by
    clip uuid, what was left out, what was done (notes), and where the split came from."""

    scan: Scan
    clips: list[Clip]
    headers: dict[str, Header]
    problems: list[Problem]
    notes: list[str]
    split_file: Path | None  # where the made split is stored (None: the data gave every split)
    split_made: bool


# --- which layout --------------------------------------------------------------------------


def is_custom(source: Path) -> bool:
    """True when `source` is a CSV file, or a folder holding class folders and no
    Medley-solos-DB metadata CSV (engine.data.dataset checks that layout first)."""
    if source.is_file():
        return source.suffix.lower() == ".csv"
    return source.is_dir() and any(_subfolders(source))


def scan(source: Path | str) -> Scan:
    """The labelled files and class names of a CSV file or a folder of class folders, without
    reading audio. Raises DatasetError when nothing usable is found (TooFewClasses when fewer
    than two classes are left)."""
    source = Path(source).expanduser()
    found = _scan_csv(source) if source.is_file() else _scan_folders(source)
    found = _merge_clashing_labels(found)
    if len(found.class_names) < MIN_CLASSES:
        named = ", ".join(repr(n) for n in found.class_names) or "none"
        raise TooFewClasses(
            f"{source} holds {len(found.class_names)} class{'es' if len(found.class_names) != 1 else ''} with audio "
            f"({named}); a classifier needs at least {MIN_CLASSES}: add a folder (or CSV label) per class")
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    except OSError:
        return []


def _audio_files(folder: Path) -> tuple[list[Path], int]:
    """Audio files under `folder` (any depth, hidden ones skipped), sorted; and how many other files."""
    audio, other = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in AUDIO_SUFFIXES:
                audio.append(Path(dirpath) / name)
            else:
                other += 1
    return audio, other


def _scan_folders(root: Path) -> Scan:
    """Class folders, optionally under split folders."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} {'is not a folder' if root.exists() else 'does not exist'}")
    top = _subfolders(root)
    split_level = bool(top) and all(p.name.strip().lower() in SPLIT_NAMES for p in top)
    named_splits = [p.name for p in top if p.name.strip().lower() in SPLIT_NAMES]
    if named_splits and not split_level and any(SPLIT_NAMES[n.strip().lower()] == "training" for n in named_splits):
        others = [p.name for p in top if p.name.strip().lower() not in SPLIT_NAMES]
        raise DatasetError(f"{root} mixes split folders ({', '.join(named_splits)}) with other folders "
                           f"({', '.join(others[:5])}): put every class folder inside training/, validation/, test/, "
                           "or use no split level at all")
    levels = [(SPLIT_NAMES[p.name.strip().lower()], p) for p in top] if split_level else [(None, root)]
    entries: list[Entry] = []
    problems: list[Problem] = []
    ignored = 0
    with_audio: set[str] = set()
    for split, base in levels:
        loose = [p for p in _safe_iter(base) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
        for path in loose:
            problems.append(Problem(_rel(path, root), "not inside a class folder: no label, left out", "DatasetError"))
        for folder in _subfolders(base):
            label = folder.name
            files, other = _audio_files(folder)
            ignored += other
            if not files:
                if not split_level:
                    problems.append(Problem(_rel(folder, root) + "/", f"class folder {folder.name!r} holds no audio file "
                                            f"({', '.join(s[1:] for s in AUDIO_SUFFIXES)}): the class is left out",
                                            EmptyClass.__name__))
                continue
            with_audio.add(label)
            for path in files:
                rel = _rel(path, root)
                entries.append(Entry(path, rel, label, split, rel, rel))
    if split_level:  # a class folder empty in every split
        named = {folder.name for _, base in levels for folder in _subfolders(base)}
        for label in sorted(named - with_audio):
            problems.append(Problem(label + "/", f"class {label!r} holds no audio file in any split: the class is left out",
                                    EmptyClass.__name__))
    notes = [f"{ignored} file(s) that are not audio ({', '.join(AUDIO_SUFFIXES)}) were ignored"] if ignored else []
    if split_level:
        notes.append("splits from the folders: " + ", ".join(p.name + "/" for p in top))
    labels = tuple(sorted({e.label for e in entries}, key=lambda n: (n.casefold(), n)))
    return Scan("folders", root, entries, labels, problems, notes)


def _safe_iter(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _scan_csv(csv_path: Path) -> Scan:
    """Rows of a `path,label[,split][,group]` CSV; paths relative to its folder, none outside it."""
    root = csv_path.parent
    rows = _read_csv(csv_path)
    base = root.resolve()
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: dict[str, Entry] = {}
    for line, row in rows:
        where = f"{csv_path.name} line {line}"
        cell, label = row.get("path", ""), row.get("label", "")
        split_text = row.get("split", "").strip()
        if not cell.strip() or not label.strip():
            problems.append(Problem(where, "empty path or label: row left out", "DatasetError"))
            continue
        path = _inside(cell.strip(), root, base)
        if path is None:
            problems.append(Problem(where, f"path {cell.strip()!r} leads outside the CSV's folder {root}: refused (paths "
                                    "must be relative to the CSV's folder and stay inside it)", UnsafePath.__name__))
            continue
        split = SPLIT_NAMES.get(split_text.lower()) if split_text else None
        if split_text and split is None:
            problems.append(Problem(where, f"unknown split {split_text!r}: expected training, validation or test "
                                    "(or empty, to have the split made)", "DatasetError"))
            continue
        rel = _rel(path, base)
        if rel in seen:
            first = seen[rel]
            splits = f" ({first.split or 'no split'} there, {split or 'no split'} here)" if first.split != split else ""
            problems.append(Problem(where, f"{rel} is listed again (first at {first.where}){splits}: the first row is kept",
                                    DuplicateClip.__name__))
            continue
        entry = Entry(path, rel, label, split, row.get("group", "").strip() or rel, where)
        seen[rel] = entry
        entries.append(entry)
    labels = tuple(sorted({e.label for e in entries}, key=lambda n: (n.casefold(), n)))
    if len(labels) > MAX_CLASSES:
        raise DatasetError(f"{csv_path} has {len(labels)} distinct labels; is 'label' the class column?")
    return Scan("csv", root, entries, labels, problems, [], csv_path)


def _inside(cell: str, root: Path, base: Path) -> Path | None:
    """The file a CSV cell names, relative to `root` (resolved: `base`), or None when it is
    absolute or leads outside (`..`, a link out of the folder)."""
    if Path(cell).is_absolute() or cell.startswith(("/", "\\")) or (len(cell) > 1 and cell[1] == ":"):
        return None
    try:
        resolved = (root / cell).resolve()
        resolved.relative_to(base)
    except (ValueError, OSError, RuntimeError):
        return None
    return resolved


def _read_csv(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line, {column: value}) of a labels CSV; DatasetError naming what is wrong with it."""
    return read_csv_rows(csv_path, "labels", CSV_COLUMNS, f"{','.join(CSV_COLUMNS)} and optionally split, group",
                         lower=True)


def _merge_clashing_labels(found: Scan) -> Scan:
    """Labels as class names: surrounding whitespace dropped, and labels that differ only in case
    or whitespace read as one class, named by the spelling with the most files (a LabelClash
    problem names every spelling)."""
    spellings: dict[str, dict[str, int]] = {}
    for entry in found.entries:
        key = " ".join(entry.label.split()).casefold()
        spellings.setdefault(key, {}).setdefault(entry.label, 0)
        spellings[key][entry.label] += 1
    rename: dict[str, str] = {}
    for names in spellings.values():
        chosen = " ".join(sorted(names, key=lambda n: (-names[n], n))[0].split())
        rename.update(dict.fromkeys(names, chosen))
        if len(names) > 1:
            found.problems.append(Problem(
                ", ".join(repr(n) for n in sorted(names)),
                f"labels {' and '.join(repr(n) for n in sorted(names))} differ only in case or whitespace: read as one "
                f"class {chosen!r} ({', '.join(f'{n!r} {k} files' for n, k in sorted(names.items()))}); rename the "
                "folders or labels to silence this", LabelClash.__name__))
    found.entries = [replace(e, label=rename[e.label]) for e in found.entries]
    found.class_names = tuple(sorted({e.label for e in found.entries}, key=lambda n: (n.casefold(), n)))
    return found


# --- reading headers, windows, duplicates, the split --------------------------------------


def load_custom(source: Path | str, *, check_audio: bool = True, progress: Progress | None = None) -> Loaded:
    """Everything engine.data.dataset needs to build a dataset of a custom layout (see the
    module docstring). Unusable files become Problems; DatasetError only when the layout
    itself is unusable (scan)."""
    found = scan(source)
    problems, notes = list(found.problems), list(found.notes)
    headers = _read_headers(found.entries, check_audio, progress)
    kept: list[Entry] = []
    for entry in found.entries:
        header = headers[entry.rel]
        if isinstance(header, Problem):
            problems.append(header)
        else:
            kept.append(entry)
    kept, duplicates = _content_duplicates(kept, {e.rel: headers[e.rel].size for e in kept})
    problems += duplicates
    label_ids = {name: k for k, name in enumerate(found.class_names)}
    split_of, split_file, made, split_notes = _splits(found, kept, label_ids)
    notes += split_notes
    kept, cross = _cross_split_duplicates(kept, split_of)
    problems += cross
    clips: list[Clip] = []
    clip_headers: dict[str, Header] = {}
    long_files = 0
    for entry in kept:
        header = headers[entry.rel]
        windows = _windows(header) if check_audio else [(0.0, None)]
        long_files += len(windows) > 1
        for k, (start, seconds) in enumerate(windows):
            uuid = entry.rel if len(windows) == 1 else f"{entry.rel}#{k}"
            clips.append(Clip(entry.path, split_of[entry.rel], label_ids[entry.label], uuid, None, start, seconds,
                              entry.group))
            clip_headers[uuid] = header
    if long_files:
        notes.append(f"{long_files} file(s) longer than {CLIP_SECONDS:.2f} s were cut into consecutive "
                     f"{CLIP_SECONDS:.2f} s windows; every window of a file stays in the file's split")
    order = {name: i for i, name in enumerate(SUBSETS)}
    clips.sort(key=lambda c: order[c.subset])  # stable: file order within a split
    return Loaded(found, clips, clip_headers, problems, notes, split_file, made)


def _read_headers(entries: list[Entry], check_audio: bool, progress: Progress | None) -> dict[str, Header | Problem]:
    """rel -> the file's header, or the Problem that leaves it out (read in a thread pool)."""
    check = _file_header if check_audio else _file_stat
    total, out = len(entries), {}
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for done, (entry, result) in enumerate(zip(entries, pool.map(check, entries)), 1):
            out[entry.rel] = result
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total, f"checking audio files ({done}/{total})")
    return out


def _file_stat(entry: Entry) -> Header | Problem:
    result = stat_header_or_problem(entry.path)
    return Problem(entry.where, result, AudioError.__name__) if isinstance(result, str) else result


def _file_header(entry: Entry) -> Header | Problem:
    """A usable file's header, or why it is left out: missing, empty, unreadable, no samples,
    longer than max_audio_seconds() (read from the header: nothing is decoded)."""
    stat = _file_stat(entry)
    if isinstance(stat, Problem):
        return stat
    try:
        info = sf.info(str(entry.path))
    except Exception as exc:  # libsndfile raises several types for bad input
        return Problem(entry.where, f"unreadable audio: {exc}", AudioError.__name__)
    header = Header(stat.size, stat.mtime_ns, int(info.samplerate), int(info.frames), int(info.channels))
    if header.frames <= 0 or header.sample_rate <= 0:
        return Problem(entry.where, "contains no samples", AudioError.__name__)
    limit = max_audio_seconds()
    if header.seconds > limit:
        return Problem(entry.where, f"lasts {header.seconds / 3600:.1f} h ({header.seconds / 60:.0f} minutes, from its "
                       f"header); the limit is {limit / 60:g} minutes per file: cut it into shorter files (or set "
                       "MEDLEY_MAX_AUDIO_MINUTES)", AudioTooLong.__name__)
    return header


def _windows(header: Header) -> list[tuple[float, float | None]]:
    """(start, seconds) of each CLIP_SECONDS window of a file (audio.window_starts: no overlap,
    a tail under half a window dropped); one window from 0 for a file no longer than a clip."""
    length = max(1, int(round(CLIP_SECONDS * header.sample_rate)))
    return [(start / header.sample_rate, CLIP_SECONDS) for start in window_starts(header.frames, length)]


_EDGE_BYTES = 1 << 16  # bytes hashed at each end of a file before hashing it whole


def _digest(path: Path, whole: bool) -> str:
    """sha256 of the file's first and last _EDGE_BYTES (cheap: tells almost all files of one
    size apart), or of all of it."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        if not whole:
            h.update(handle.read(_EDGE_BYTES))
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _EDGE_BYTES))
            h.update(handle.read(_EDGE_BYTES))
            return h.hexdigest()
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same_content(entries: list[Entry], sizes: dict[str, int]) -> dict[str, str]:
    """rel -> rel of the first entry (in `entries` order) with the same bytes. Only files of
    equal size are read, first their ends, and whole only where those agree too."""
    first_of: dict[str, str] = {}
    candidates: list[list[Entry]] = [list(g) for g in _grouped(entries, lambda e: sizes[e.rel]) if len(g) > 1]
    for whole in (False, True):
        narrowed = []
        for same in candidates:
            narrowed += [g for g in _grouped(same, lambda e: _digest_or_rel(e, whole)) if len(g) > 1]
        candidates = narrowed
    for same in candidates:
        for entry in same[1:]:
            first_of[entry.rel] = same[0].rel
    return first_of


def _grouped(entries: list[Entry], key: Callable[[Entry], object]) -> list[list[Entry]]:
    groups: dict[object, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return list(groups.values())


def _digest_or_rel(entry: Entry, whole: bool) -> str:
    try:
        return _digest(entry.path, whole)
    except OSError:  # unreadable now: never the same as another
        return "unreadable:" + entry.rel


def _content_duplicates(entries: list[Entry], sizes: dict[str, int]) -> tuple[list[Entry], list[Problem]]:
    """Files with the same bytes: under two labels, the later copy is left out (DuplicateClip);
    under one label they share the first one's group, so a made split keeps them together."""
    first_of = _same_content(entries, sizes)
    by_rel = {e.rel: e for e in entries}
    kept, problems = [], []
    for entry in entries:
        first = by_rel.get(first_of.get(entry.rel, ""))
        if first is None:
            kept.append(entry)
        elif first.label != entry.label:
            problems.append(Problem(entry.where, f"same audio as {first.rel}, labelled {first.label!r} there and "
                                    f"{entry.label!r} here: left out", DuplicateClip.__name__))
        else:
            kept.append(replace(entry, group=first.group) if entry.split is None else entry)
    return kept, problems


def _cross_split_duplicates(entries: list[Entry], split_of: dict[str, str]) -> tuple[list[Entry], list[Problem]]:
    """A file whose bytes are also in an earlier split (training < validation < test) is left
    out of the later one, which it would leak into (DuplicateClip names both)."""
    rank = {name: i for i, name in enumerate(SUBSETS)}
    ordered = sorted(entries, key=lambda e: rank[split_of[e.rel]])
    first_of = _same_content(ordered, {e.rel: _size(e.path) for e in entries})
    by_rel = {e.rel: e for e in entries}
    kept, problems = [], []
    for entry in entries:
        first = by_rel.get(first_of.get(entry.rel, ""))
        if first is not None and split_of[first.rel] != split_of[entry.rel]:
            problems.append(Problem(entry.where, f"same audio as {first.rel}: in {split_of[first.rel]} there and in "
                                    f"{split_of[entry.rel]} here, where it would leak into evaluation: left out of "
                                    f"{split_of[entry.rel]}", DuplicateClip.__name__))
        else:
            kept.append(entry)
    return kept, problems


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _splits(found: Scan, entries: list[Entry], label_ids: dict[str, int]
            ) -> tuple[dict[str, str], Path | None, bool, list[str]]:
    """rel -> split for every entry: the data's own where given, else the stored made split
    (a file it does not list yet joins its group's split, or a split made for the new files
    alone, so that adding files never moves the others), written beside the data or in the
    cache. Returns (splits, file of the made split or None, whether it was (re)made now, notes)."""
    split_of = {e.rel: e.split for e in entries if e.split is not None}
    missing = [e for e in entries if e.split is None]
    if not missing:
        return split_of, None, False, []
    target = split_file_for(found)
    stored = read_split_file(target) or {}
    known = {e.rel: stored[e.rel] for e in missing if e.rel in stored}
    if len(known) == len(missing):
        split_of.update(known)
        return split_of, target, False, [f"split read from {target} (delete it to have it made again)"]
    of_group = {e.group: known[e.rel] for e in missing if e.rel in known}
    joined = {e.rel: of_group[e.group] for e in missing if e.rel not in known and e.group in of_group}
    fresh = [e for e in missing if e.rel not in known and e.rel not in joined]
    made = make_split([e.group for e in fresh], [label_ids[e.label] for e in fresh])
    split_of.update({**known, **joined, **{e.rel: s for e, s in zip(fresh, made)}})
    where = write_split_file(target, {e.rel: split_of[e.rel] for e in missing})
    new = len(missing) - len(known)
    text = (f"split made (stratified by class, files of one group together, seed {SPLIT_SEED}, about "
            f"{1 - sum(SPLIT_SHARE.values()):.0%}/{SPLIT_SHARE['validation']:.0%}/{SPLIT_SHARE['test']:.0%}) for "
            + (f"{new} file(s) new since the stored split (the others keep theirs)" if known else
               f"{len(missing)} file(s){' without a split' if split_of.keys() - {e.rel for e in missing} else ''}")
            + "; ")
    text += f"stored in {where}" if where is not None else "it could not be stored (read-only folder and cache)"
    return split_of, where, True, [text]


def split_file_for(found: Scan) -> Path:
    """Where a made split is kept: beside the data (folders: SPLIT_FILE in the root; csv:
    `<name>.split.csv` beside it), or in the cache when that file cannot be written."""
    beside = (found.csv_path.with_name(found.csv_path.stem + ".split.csv") if found.csv_path is not None
              else found.root / SPLIT_FILE)
    if os.access(beside.parent, os.W_OK) and (not beside.exists() or os.access(beside, os.W_OK)):
        return beside
    return cached_split_file(beside)
