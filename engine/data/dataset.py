"""A dataset on disk -> clips per split: Medley-solos-DB's layouts, or the user's own.

Medley-solos-DB (metadata CSV + WAV files, its eight classes, its official splits):

- "mirdata": `annotation/Medley-solos-DB_metadata.csv` and `audio/*.wav` (mirdata's layout,
  also what `engine.data.demo.make_demo` writes);
- "flat": the CSV and the WAVs together in one folder (the Zenodo archive plus the CSV).

A labelled dataset of the user's own (issue #27, engine.data.folders): "folders" (one folder
per class, optionally under training/ validation/ test/) or "csv" (`path,label[,split][,group]`);
its class names come from the data (`MedleyDataset.class_names`).

A folder or CSV that cannot be read raises one `DatasetError` naming what is wrong. A bad CSV
row or a missing, unreadable, empty or wrong-length audio file is never fatal: it is skipped
and reported as a `Problem`, so nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import soundfile as sf

from ..core import paths
from ..core.errors import DatasetError
from ..core.labels import CLASS_NAMES, NUM_CLASSES, PROGRAM_VIEW, PROGRAM_VIEW_CSV, SUBSETS
from .clips import CLIP_SECONDS, Clip, Problem, read_csv_rows
from .clips import Header as _Header
from .clips import stat_header_or_problem as _stat_header_or_problem
from .folders import is_custom, load_custom, scan

CUSTOM_LAYOUTS = ("folders", "csv")

Progress = Callable[[int, int, str], None]

METADATA_NAME = "Medley-solos-DB_metadata.csv"
PROGRAM_VIEW_MISSING = ("not available for this dataset (no held-out programs: only the demo records "
                        "which GM program plays each song)")
EXPECTED_COLUMNS: tuple[str, ...] = ("subset", "instrument", "instrument_id", "song_id", "uuid4")
DURATION_TOLERANCE = 0.01  # relative
DEMO_SIZES = ("tiny", "default", "full", "reversed")  # "reversed": default with the soundfonts swapped
DEMO_MARKER = ".complete"  # written by engine.data.demo.make_demo into a finished demo folder
_HEADER_WORKERS = 8  # header reads wait on the disk, not the CPU
_HEADER_BATCH = 256  # files per thread-pool task


@dataclass
class MedleyDataset:
    """The clips of one dataset folder, in CSV order, and the problems met while reading it."""

    root: Path
    layout: str  # "mirdata" | "flat"
    clips: list[Clip]
    problems: list[Problem]
    is_demo: bool = False
    csv_path: Path | None = None
    program_view: list[Clip] = field(default_factory=list)  # PROGRAM_VIEW clips (demo generator 4+), else []
    class_names: tuple[str, ...] = CLASS_NAMES  # clip.label indexes these; Medley-solos-DB: its eight
    notes: list[str] = field(default_factory=list)  # what reading did besides skipping (split made, windows cut, ...)
    split_file: Path | None = None  # custom layouts: where the made split is stored (None: given by the data)
    split_made: bool = False  # the split was made (not read back) by this load
    _headers: dict[str, _Header] = field(default_factory=dict, repr=False, compare=False)
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def subset(self, name: str) -> list[Clip]:
        """The clips of one official split ("training", "validation" or "test"), in CSV order."""
        if name not in SUBSETS:
            raise DatasetError(f"unknown subset {name!r}; expected one of {', '.join(SUBSETS)}")
        return [clip for clip in self.clips if clip.subset == name]

    def fingerprint(self) -> str:
        """Hex digest of the CSV bytes and (file name, size, mtime_ns) of every kept clip.

        Cheap (no audio is read) and changes whenever a clip or the metadata changes; it names
        the feature cache entries. Computed once per dataset object.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            if self.csv_path is not None and self.csv_path.exists():
                digest.update(self.csv_path.read_bytes())
            view_csv = self.csv_path.with_name(PROGRAM_VIEW_CSV) if self.csv_path is not None else None
            if view_csv is not None and view_csv.exists():
                digest.update(view_csv.read_bytes())
            custom = self.layout in CUSTOM_LAYOUTS
            if custom:  # labels and splits may come from folders and a made split, not the CSV's bytes
                digest.update(("\0".join(self.class_names) + "\n").encode())
            for clip in [*self.clips, *self.program_view]:
                header = self._headers.get(clip.uuid) or _stat_header(clip.path)
                digest.update(f"{clip.path.name}\0{header.size}\0{header.mtime_ns}\n".encode())
                if custom:
                    digest.update(f"{clip.uuid}\0{clip.subset}\0{clip.label}\0{clip.start}\0{clip.seconds}\n".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def counts(self) -> dict[str, dict[str, int]]:
        """subset -> class name -> number of kept clips (every subset and class present, maybe 0)."""
        table = {subset: {name: 0 for name in self.class_names} for subset in SUBSETS}
        for clip in self.clips:
            table[clip.subset][self.class_names[clip.label]] += 1
        return table


def load_dataset(
    root: Path | str, *, check_audio: bool = True, progress: Progress | None = None
) -> MedleyDataset:
    """Read the metadata CSV under `root` and keep the clips whose audio is usable.

    With `check_audio` every WAV header is read (in a thread pool): missing, empty, unreadable
    files and files whose duration is not 131,072/44,100 s within 1% (any sample rate) become
    Problems. Without it only missing files are. Raises DatasetError when the folder or the
    CSV cannot be used at all.

    `root` may also be a dataset of the user's own (a folder of class folders, or a labels
    CSV file): see engine.data.folders; any length, rate and channel count is read then.
    """
    root = Path(root).expanduser()
    if _custom_layout(root):
        return _load_custom(root, check_audio, progress)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"dataset folder {root} {what}")
    layout, csv_path, audio_dir = _find_layout(root)
    rows = _read_metadata(csv_path)
    candidates, problems = _clips_from_rows(rows, audio_dir, csv_path.name)
    check = _read_header if check_audio else _stat_header_or_problem
    headers, audio_problems = _check_files(candidates, check, progress)
    kept = [clip for clip in candidates if clip.uuid in headers]
    view, view_problems = _program_view(csv_path, audio_dir, check, progress)
    ds = MedleyDataset(
        root=root,
        layout=layout,
        clips=kept,
        problems=problems + audio_problems + view_problems,
        is_demo=_is_demo_folder(root),
        csv_path=csv_path,
        program_view=view,
        _headers=headers if check_audio else {},
    )
    if check_audio:
        bad = _nonfinite_clips(ds, progress)
        if bad:
            ds.clips = [clip for clip in ds.clips if clip.uuid not in bad]
            ds.problems += [Problem(clip.path.name, bad[clip.uuid]) for clip in kept if clip.uuid in bad]
            ds._fingerprint = None
    return ds


def is_custom_layout(root: Path | str) -> bool:
    """True when `root` is a dataset of the user's own (engine.data.folders): a labels CSV file,
    or a folder of class folders without Medley-solos-DB's metadata CSV. Reads no audio."""
    return _custom_layout(Path(root).expanduser())


def _custom_layout(root: Path) -> bool:
    """A labels CSV file, or a folder of class folders without Medley-solos-DB's metadata CSV."""
    if root.is_file():
        return root.name != METADATA_NAME and is_custom(root)
    medley = (root / "annotation" / METADATA_NAME).is_file() or (root / METADATA_NAME).is_file()
    return not medley and is_custom(root)


def _load_custom(root: Path, check_audio: bool, progress: Progress | None) -> MedleyDataset:
    """A custom layout's dataset (engine.data.folders.load_custom), samples checked as Medley's."""
    loaded = load_custom(root, check_audio=check_audio, progress=progress)
    found = loaded.scan
    ds = MedleyDataset(
        root=found.root, layout=found.layout, clips=loaded.clips, problems=loaded.problems,
        csv_path=found.csv_path, class_names=found.class_names, notes=loaded.notes,
        split_file=loaded.split_file, split_made=loaded.split_made, _headers=loaded.headers if check_audio else {},
    )
    if check_audio:
        bad = _nonfinite_clips(ds, progress)
        if bad:
            gone = {clip.path: bad[clip.uuid] for clip in ds.clips if clip.uuid in bad}
            ds.problems += [Problem(_display(ds, path), reason, "AudioError") for path, reason in sorted(gone.items())]
            ds.clips = [clip for clip in ds.clips if clip.path not in gone]
            ds._fingerprint = None
    return ds


def _display(ds: MedleyDataset, path: Path) -> str:
    try:
        return path.resolve().relative_to(ds.root.resolve()).as_posix()
    except ValueError:
        return path.name


def dataset_class_names(data: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class names of the dataset `data` (as resolve_dataset reads it), without reading any
    audio: Medley-solos-DB's eight for its layouts, the demo and a folder that does not exist
    (loading it says what is wrong); a custom layout's from its folders or CSV (its errors
    raised: TooFewClasses, DatasetError)."""
    if demo_size(data) is not None:
        return CLASS_NAMES
    root = paths.resolve_data_root(data or None)
    if root is None or not _custom_layout(root):
        return CLASS_NAMES
    return scan(root).class_names


def with_dataset_classes(config: Any) -> Any:
    """`config` (a RunConfig) with `classes` set to its dataset's class names
    (dataset_class_names(config.data); empty for Medley-solos-DB's eight): what a JobManager
    does to every run it queues, so that the run's model, metrics and predictions name them.
    A dataset with classes of its own also turns outlier exposure off (train.outlier_exposure: its
    instruments were chosen against Medley-solos-DB's classes, and may be among the dataset's)."""
    names = dataset_class_names(config.data or None)
    classes = () if names == CLASS_NAMES else names
    if classes and config.train.outlier_exposure > 0:  # its instruments were chosen against the 8 classes
        config = replace(config, train=replace(config.train, outlier_exposure=0.0))
    return config if config.classes == classes else replace(config, classes=classes)


def check_run_classes(ds: MedleyDataset, config: Any) -> None:
    """DatasetError when the dataset's classes are not the ones the run was queued with (the
    folder changed since, or another dataset answers to the same setting)."""
    if tuple(ds.class_names) != tuple(config.class_names):
        raise DatasetError(
            f"the dataset {ds.root} has the classes {', '.join(ds.class_names)}, but this run was queued for "
            f"{', '.join(config.class_names)}: start a new run on the dataset as it is now")


def _program_view(csv_path: Path, audio_dir: Path, check: Callable[[Path], _Header | str],
                  progress: Progress | None) -> tuple[list[Clip], list[Problem]]:
    """The program view's usable clips (PROGRAM_VIEW_CSV beside the metadata CSV) and the
    problems met; ([], []) when there is no such file (the real dataset)."""
    view_csv = csv_path.with_name(PROGRAM_VIEW_CSV)
    if not view_csv.is_file():
        return [], []
    candidates, problems = _clips_from_rows(_read_metadata(view_csv), audio_dir, view_csv.name, (PROGRAM_VIEW,))
    headers, audio_problems = _check_files(candidates, check, progress, "checking the program view's audio files")
    return [clip for clip in candidates if clip.uuid in headers], problems + audio_problems


def find_clip(ds: MedleyDataset, uuid: str) -> Clip:
    """The clip whose uuid4 is `uuid` (or a unique prefix of it); DatasetError if none or several."""
    uuid = uuid.strip()
    exact = [clip for clip in ds.clips if clip.uuid == uuid]
    matches = exact or [clip for clip in ds.clips if uuid and clip.uuid.startswith(uuid)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DatasetError(f"no clip with uuid {uuid!r} in {ds.root}")
    raise DatasetError(f"uuid prefix {uuid!r} matches {len(matches)} clips in {ds.root}; give more characters")


def summarize(ds: MedleyDataset) -> dict:
    """A JSON-able description of the dataset, from the CSV and audio headers only.

    Keys: root, layout, is_demo, class_names, counts (subset -> class -> n), totals (subset ->
    n), problems ([{file, reason, kind}]), sample_rates ({hz: n files}, hz as a string),
    channels ({count: n files}), durations ({min, max, mean} seconds per file), class_share
    (subset -> class -> fraction of the subset), imbalance (largest / smallest training class,
    None when one is empty), warnings (class_warnings), notes (what reading did: the split
    made and where it is stored, windows cut), split_file, split_made, program_view (class -> n
    clips of the demo's held-out-program songs; {} without them).
    """
    by_file: dict[Path, _Header | None] = {}
    for clip in ds.clips:
        if clip.path not in by_file:
            by_file[clip.path] = ds._headers.get(clip.uuid) or (
                None if ds.layout in CUSTOM_LAYOUTS else _read_header_quietly(clip.path))
    headers = [h for h in by_file.values() if h is not None and h.sample_rate]
    counts = ds.counts()
    totals = {subset: sum(per_class.values()) for subset, per_class in counts.items()}
    training = list(counts["training"].values())
    return {
        "root": str(ds.root),
        "layout": ds.layout,
        "is_demo": ds.is_demo,
        "class_names": list(ds.class_names),
        "counts": counts,
        "totals": totals,
        "problems": [{"file": p.file, "reason": p.reason, "kind": p.kind} for p in ds.problems],
        "sample_rates": _tally(str(h.sample_rate) for h in headers),
        "channels": _tally(str(h.channels) for h in headers if h.channels),
        "durations": _duration_stats([h.seconds for h in headers]),
        "program_view": _tally(ds.class_names[clip.label] for clip in ds.program_view),
        "class_share": {
            subset: {name: (n / totals[subset] if totals[subset] else 0.0) for name, n in per_class.items()}
            for subset, per_class in counts.items()
        },
        "imbalance": (max(training) / min(training)) if training and min(training) > 0 else None,
        "warnings": class_warnings(counts),
        "notes": list(ds.notes),
        "split_file": str(ds.split_file) if ds.split_file is not None else None,
        "split_made": ds.split_made,
    }


MIN_TRAINING_CLIPS = 5  # fewer training clips of a class than this: too few to learn it


def class_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """One sentence per class with too few clips: under MIN_TRAINING_CLIPS in training, none in
    validation (it cannot be validated: no per-class accuracy, no model selection on it), or
    none in test while test has clips."""
    out = []
    has_test = sum(counts.get("test", {}).values()) > 0
    for name in counts.get("training", {}):
        n_train, n_val = counts["training"][name], counts.get("validation", {}).get(name, 0)
        if n_train < MIN_TRAINING_CLIPS:
            out.append(f"{name}: {n_train} training clip{'s' if n_train != 1 else ''}, too few to learn it "
                       f"(at least {MIN_TRAINING_CLIPS}; add recordings)")
        if n_val == 0:
            out.append(f"{name}: no validation clip, so it cannot be validated (no per-class accuracy on validation)")
        if has_test and counts["test"].get(name, 0) == 0:
            out.append(f"{name}: no test clip")
    return out


def resolve_dataset(data: str | os.PathLike | None = None, *, progress: Progress | None = None) -> MedleyDataset:
    """The dataset to work on.

    `data` may be a folder, or "demo" / "demo:tiny" / "demo:default" / "demo:full" for a
    generated demo dataset (made if missing). Without it: $MEDLEY_DATA, then
    ~/mir_datasets/medley_solos_db, else the default demo dataset.
    """
    size = demo_size(data)
    if size is not None:
        return _load_demo(size, progress)
    return load_dataset(paths.resolve_data_root(data), progress=progress)


def demo_size(data: str | os.PathLike | None = None) -> str | None:
    """The demo size ("tiny", "default", "full") that `data` resolves to as in resolve_dataset
    (an empty value falls back on $MEDLEY_DATA, then mirdata's folder), or None for a real folder."""
    if not data:
        data = os.environ.get("MEDLEY_DATA") or None
        if data is None:
            return "default" if paths.resolve_data_root(None) is None else None
    return _demo_size(data)


# --- layout and metadata -------------------------------------------------------------------


def _find_layout(root: Path) -> tuple[str, Path, Path]:
    """(layout, csv path, audio folder) of a dataset folder, or DatasetError."""
    mirdata_csv = root / "annotation" / METADATA_NAME
    flat_csv = root / METADATA_NAME
    if mirdata_csv.is_file():
        return "mirdata", mirdata_csv, root / "audio"
    if flat_csv.is_file():
        return "flat", flat_csv, root
    raise DatasetError(
        f"no metadata CSV in {root}: looked for {mirdata_csv} (mirdata layout) and {flat_csv} (flat layout); "
        "for a dataset of your own, use one folder per class (optionally under training/ validation/ test/) "
        "or give a CSV file with path,label columns"
    )


def _read_metadata(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows as (line number, {column: value}); DatasetError if unreadable or columns lack."""
    return read_csv_rows(csv_path, "metadata", EXPECTED_COLUMNS, ",".join(EXPECTED_COLUMNS), strip_values=True)


def _clips_from_rows(
    rows: Iterable[tuple[int, dict[str, str]]], audio_dir: Path, csv_name: str,
    subsets: tuple[str, ...] = SUBSETS,
) -> tuple[list[Clip], list[Problem]]:
    """Clips for the valid rows; a Problem for each row with a bad subset (not in `subsets`),
    label or uuid."""
    clips: list[Clip] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, row in rows:
        where = f"{csv_name} line {line}"
        subset, uuid = row.get("subset", ""), row.get("uuid4", "")
        label = _parse_int(row.get("instrument_id", ""))
        if subset not in subsets:
            expected = " or ".join(filter(None, (", ".join(subsets[:-1]), subsets[-1])))
            problems.append(Problem(where, f"unknown subset {subset!r}; expected {expected}"))
        elif label is None or not 0 <= label < NUM_CLASSES:
            problems.append(Problem(where, f"instrument_id {row.get('instrument_id')!r} is not an integer 0..7"))
        elif not uuid:
            problems.append(Problem(where, "empty uuid4"))
        elif uuid in seen:
            problems.append(Problem(where, f"duplicate uuid4 {uuid!r}; the first row is kept"))
        else:
            seen.add(uuid)
            path = audio_dir / f"Medley-solos-DB_{subset}-{label}_{uuid}.wav"
            clips.append(Clip(path, subset, label, uuid, _parse_int(row.get("song_id", ""))))
    return clips, problems


def _parse_int(text: str) -> int | None:
    try:
        return int(float(text)) if text.strip() else None
    except ValueError:
        return None


# --- audio headers -------------------------------------------------------------------------


def _check_files(
    clips: list[Clip], check: Callable[[Path], _Header | str], progress: Progress | None,
    what: str = "checking audio files",
) -> tuple[dict[str, _Header], list[Problem]]:
    """Run `check` on every clip's file in a thread pool: uuid -> header for good files, Problems for bad.

    Files go to the threads in batches: one task per file costs more than reading its header.
    """
    headers: dict[str, _Header] = {}
    problems: list[Problem] = []
    total = len(clips)
    batches = [clips[start : start + _HEADER_BATCH] for start in range(0, total, _HEADER_BATCH)]

    def check_batch(batch: list[Clip]) -> list[_Header | str]:
        return [check(clip.path) for clip in batch]

    done = 0
    with ThreadPoolExecutor(max_workers=_HEADER_WORKERS) as pool:
        for batch, results in zip(batches, pool.map(check_batch, batches)):
            for clip, result in zip(batch, results):
                if isinstance(result, str):
                    problems.append(Problem(clip.path.name, result))
                else:
                    headers[clip.uuid] = result
            done += len(batch)
            if progress is not None:
                progress(done, total, f"{what} ({done}/{total})")
    return headers, problems


def _read_header(path: Path) -> _Header | str:
    """The header of a usable clip, or the reason the file cannot be used."""
    stat = _stat_header_or_problem(path)
    if isinstance(stat, str):
        return stat
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for bad input
        return f"unreadable audio: {exc}"
    header = _Header(stat.size, stat.mtime_ns, int(info.samplerate), int(info.frames))
    if header.frames == 0:
        return "contains no samples"
    if abs(header.seconds - CLIP_SECONDS) > DURATION_TOLERANCE * CLIP_SECONDS:
        return f"lasts {header.seconds:.3f} s ({header.frames} samples at {header.sample_rate} Hz); expected {CLIP_SECONDS:.3f} s"
    return header


def _nonfinite_clips(ds: MedleyDataset, progress: Progress | None) -> dict[str, str]:
    """uuid -> reason for clips whose samples include NaN or infinity (floating-point WAVs only:
    integer PCM cannot hold them). Every sample is read once per dataset version: the answer
    is kept in cache/checks/<fingerprint>.json and reused while no file changes."""
    memo = paths.cache_root() / "checks" / f"{ds.fingerprint()}.json"
    try:
        return dict(json.loads(memo.read_text())["bad"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    unique = list({clip.path: clip for clip in ds.clips}.values())  # a long file's windows: read once
    good, problems = _check_files(unique, _sample_problem, progress, "checking audio samples")
    bad_paths = {clip.path: p.reason for clip, p in zip([c for c in unique if c.uuid not in good], problems)}
    bad = {clip.uuid: bad_paths[clip.path] for clip in ds.clips if clip.path in bad_paths}
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"bad": bad}))
        os.replace(tmp, memo)
    except OSError:  # a read-only cache: check again next time
        pass
    return bad


def _sample_problem(path: Path) -> str | None:
    """None for a clip whose samples are all finite, else the reason it cannot be used."""
    try:
        with sf.SoundFile(str(path)) as handle:
            if handle.subtype not in ("FLOAT", "DOUBLE"):
                return None
            for block in handle.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    return "contains NaN or infinite samples"
    except Exception as exc:  # libsndfile raises several types for bad input
        return f"unreadable audio: {exc}"
    return None


def _stat_header(path: Path) -> _Header:
    result = _stat_header_or_problem(path)
    return _Header(-1, -1) if isinstance(result, str) else result


def _read_header_quietly(path: Path) -> _Header | None:
    result = _read_header(path)
    return None if isinstance(result, str) else result


def _tally(values: Iterable[str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for value in values:
        table[value] = table.get(value, 0) + 1
    return table


def _duration_stats(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(seconds), "max": max(seconds), "mean": sum(seconds) / len(seconds)}


# --- demo ----------------------------------------------------------------------------------


def _demo_size(data: str | os.PathLike | None) -> str | None:
    """"demo" -> "default", "demo:tiny" -> "tiny", ...; None for anything that is not a demo name."""
    if not isinstance(data, str):
        return None
    name = data.strip().lower()
    if name == "demo":
        return "default"
    if name.startswith("demo:"):
        size = name.split(":", 1)[1].strip()
        if size not in DEMO_SIZES:
            raise DatasetError(f"unknown demo size {size!r} in {data!r}; expected one of {', '.join(DEMO_SIZES)}")
        return size
    return None


def _load_demo(size: str, progress: Progress | None) -> MedleyDataset:
    from .demo import make_demo

    ds = load_dataset(make_demo(size, progress=progress), progress=progress)
    ds.is_demo = True
    return ds


def _is_demo_folder(root: Path) -> bool:
    """True when `root` holds engine.data.demo's completion marker or lies inside the cache's demo folder."""
    if (root / DEMO_MARKER).is_file():
        return True
    try:
        root.resolve().relative_to((paths.cache_root() / "demo").resolve())
        return True
    except ValueError:
        return False
