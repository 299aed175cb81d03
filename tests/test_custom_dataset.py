"""A labelled dataset of the user's own (issue #27): a folder of class folders or a labels CSV,
any number of classes, any clip length, rate, channels and format; the split made (stratified,
group-aware, seeded) and stored; class names from the data all the way to the stored run, its
confusion matrix and its predictions; and every kind of bad input met with a clear message
while the rest of the dataset (and the store) stays usable.

Every dataset here is written by the test itself: short tones and noise, a few files per class.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import test_cli
from engine.core import errors
from engine.core.config import RunConfig, TrainConfig
from engine.core.errors import DatasetError, EngineError, TooFewClasses
from engine.core.labels import CLASS_NAMES, class_names_of
from engine.data import folders
from engine.data.clips import CLIP_SECONDS
from engine.data.dataset import (check_run_classes, dataset_class_names, load_dataset, summarize,
                                 with_dataset_classes)

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "16"]
FORMATS = (("wav", "FLOAT"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III"))


def tone(label: int, seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """A class's tone (pitch from the label) plus a little noise: (samples,) or (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 110.0 * 2 ** (label / 4) * t) + 0.02 * rng.standard_normal(len(t))
    y = y.astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


def write(path: Path, label: int, seconds: float = 1.0, sr: int = 16000, seed: int = 0, channels: int = 1,
          fmt: tuple[str, str] = ("wav", "PCM_16")) -> Path:
    path = path.with_suffix("." + fmt[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(label, seconds, sr, seed, channels), sr, subtype=fmt[1])
    return path


def audiofolder(root: Path, classes=("bird", "engine", "voice"), per_class: int = 6) -> Path:
    """One folder per class; rates (8-22.05 kHz), channels (mono, stereo), formats (WAV, FLAC, OGG,
    MP3) and lengths vary (one file of 7 s: 2 windows)."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            write(root / name / f"clip{i}", k, seconds=7.0 if i == 0 else 1.0 + 0.25 * i,
                  sr=(8000, 16000, 22050)[i % 3], seed=100 * k + i, channels=1 + i % 2, fmt=FORMATS[i % 4])
    return root


def csv_dataset(root: Path, n_classes: int = 12, per_class: int = 4, splits: bool = False) -> Path:
    """`labels.csv` (path,label,group[,split]) over audio/<class>_<i>.wav; files 0 and 1 of a class
    share a group (one session)."""
    lines = ["path,label,group" + (",split" if splits else "")]
    for k in range(n_classes):
        for i in range(per_class):
            path = write(root / "audio" / f"c{k}_{i}", k, seconds=0.8, sr=16000, seed=1000 * k + i)
            group = f"s{k}-{0 if i < 2 else i}"
            split = ("training", "training", "validation", "test")[i % 4] if splits else None
            lines.append(f"audio/{path.name},class {k:02d},{group}" + (f",{split}" if splits else ""))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


engine = functools.partial(test_cli.engine, timeout=600)  # the CLI as a user runs it; training takes longer here


def kinds(ds) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in ds.problems:
        out.setdefault(p.kind, []).append(f"{p.file}: {p.reason}")
    return out


# ---- the two layouts -----------------------------------------------------------------------


def test_an_audiofolder_of_three_classes_loads_with_its_names_a_stored_split_and_windows(tmp_path, medley_cache):
    root = audiofolder(tmp_path / "mine")
    ds = load_dataset(root)
    assert ds.layout == "folders" and ds.class_names == ("bird", "engine", "voice") and not ds.problems
    # 18 files; the 7 s file of each class is cut into 2 windows (2.97 s each, the tail under half a window dropped)
    assert len(ds.clips) == 18 + 3
    long = [c for c in ds.clips if c.path.stem == "clip0"]
    assert len(long) == 6
    assert sorted(c.start for c in long) == pytest.approx([0.0] * 3 + [CLIP_SECONDS] * 3, abs=1e-3)
    for name in ("bird", "engine", "voice"):  # every window of a file in the file's split and group
        windows = [c for c in long if c.path.parent.name == name]
        assert len({c.subset for c in windows}) == 1 and len({c.group for c in windows}) == 1
    counts = ds.counts()
    assert all(counts[split][name] >= 1 for split in ("training", "validation", "test") for name in ds.class_names)
    # the split is stored beside the data, said in the notes, and read back the next time
    split_file = root / folders.SPLIT_FILE
    assert ds.split_made and ds.split_file == split_file and split_file.is_file()
    assert any(str(split_file) in note for note in ds.notes)
    again = load_dataset(root)
    assert not again.split_made and [(c.uuid, c.subset) for c in again.clips] == [(c.uuid, c.subset) for c in ds.clips]
    info = summarize(ds)
    assert set(info["sample_rates"]) == {"8000", "16000", "22050"} and set(info["channels"]) == {"1", "2"}
    assert {c.path.suffix for c in ds.clips} == {".wav", ".flac", ".ogg", ".mp3"}
    assert info["durations"]["max"] == pytest.approx(7.0) and info["class_names"] == ["bird", "engine", "voice"]
    assert dataset_class_names(str(root)) == ("bird", "engine", "voice")


def test_a_split_level_above_the_class_folders_is_the_split(tmp_path, medley_cache):
    root = tmp_path / "given"
    for s, (split, n) in enumerate((("train", 3), ("val", 1), ("test", 2))):
        for k, name in enumerate(("cat", "dog")):
            for i in range(n):
                write(root / split / name / f"{split}{i}", k, seed=100 * s + 10 * k + i)
    ds = load_dataset(root)
    assert ds.class_names == ("cat", "dog") and ds.split_file is None and not ds.split_made and not ds.problems
    assert {s: sum(v.values()) for s, v in ds.counts().items()} == {"training": 6, "validation": 2, "test": 4}
    assert not (root / folders.SPLIT_FILE).exists()


def test_a_csv_of_twelve_classes_keeps_each_group_in_one_split(tmp_path, medley_cache):
    csv_path = csv_dataset(tmp_path / "csvdata", n_classes=12, per_class=4)
    ds = load_dataset(csv_path)
    assert ds.layout == "csv" and ds.csv_path == csv_path and not ds.problems
    assert ds.class_names == tuple(f"class {k:02d}" for k in range(12)) and len(ds.clips) == 48
    split_of_group: dict[str, set[str]] = {}
    for clip in ds.clips:
        split_of_group.setdefault(clip.group, set()).add(clip.subset)
    assert all(len(s) == 1 for s in split_of_group.values())  # s0-0 (two files) never split up
    assert ds.split_file == csv_path.with_name("labels.split.csv") and ds.split_file.is_file()
    # 3 groups per class: one each in training, validation and test (a group of 2 files gives 2 clips)
    counts = ds.counts()
    assert all(min(counts[s][n] for s in counts) >= 1 for n in ds.class_names)
    assert sum(counts["training"].values()) + sum(counts["validation"].values()) + sum(counts["test"].values()) == 48


def test_a_given_split_column_is_used_as_it_is(tmp_path, medley_cache):
    ds = load_dataset(csv_dataset(tmp_path / "d", n_classes=3, per_class=4, splits=True))
    assert ds.split_file is None
    assert {s: sum(v.values()) for s, v in ds.counts().items()} == {"training": 6, "validation": 3, "test": 3}


def test_make_split_is_stratified_group_aware_reproducible_and_handles_fifty_classes():
    labels = [k for k in range(50) for _ in range(10)]
    groups = [f"g{k}-{i // 2}" for k in range(50) for i in range(10)]  # 5 groups of 2 files per class
    split = folders.make_split(groups, labels)
    assert split == folders.make_split(groups, labels)  # fixed seed
    assert split != folders.make_split(groups, labels, seed=1)
    for g in set(groups):
        assert len({s for s, gg in zip(split, groups) if gg == g}) == 1
    for k in range(50):
        mine = [s for s, label in zip(split, labels) if label == k]
        assert mine.count("validation") == 2 and mine.count("test") == 2 and mine.count("training") == 6
    # tiny classes: 2 groups -> training + validation; 1 group -> training only
    assert folders.make_split(["a", "b", "c"], [0, 0, 1]) .count("training") == 2


def test_the_split_goes_to_the_cache_when_the_data_folder_is_read_only(tmp_path, medley_cache, monkeypatch):
    root = audiofolder(tmp_path / "ro", per_class=3)
    real_access = os.access
    monkeypatch.setattr(folders.os, "access", lambda p, mode: False if Path(p) == root else real_access(p, mode))
    ds = load_dataset(root)
    assert ds.split_file is not None and ds.split_file.is_relative_to(medley_cache)
    assert not (root / folders.SPLIT_FILE).exists()
    assert any("stored in" in n and str(medley_cache) in n for n in ds.notes)
    assert load_dataset(root).split_made is False  # read back from the cache


# ---- the run keeps the dataset's class names ------------------------------------------------


def test_runconfig_classes_round_trip_and_leave_old_digests_alone():
    assert RunConfig().digest() == RunConfig.from_dict(RunConfig().to_dict()).digest()
    assert "classes" not in RunConfig().to_dict()  # Medley-solos-DB configs read and hash as before
    mine = RunConfig(classes=("a", "b", "c"))
    assert RunConfig.from_json(mine.to_json()) == mine and mine.digest() != RunConfig().digest()
    assert RunConfig(classes=list(CLASS_NAMES)).classes == ()  # the eight, spelled out, are the default
    assert class_names_of(mine) == ("a", "b", "c") and class_names_of(RunConfig()) == CLASS_NAMES
    assert class_names_of({"config": RunConfig().to_dict()}) == CLASS_NAMES  # an old meta.json / model.json
    assert class_names_of({"class_names": ["x", "y"]}) == ("x", "y")
    for bad in (["only"], ["a", "a"], ["a", ""], "ab"):
        with pytest.raises(errors.ConfigError):
            RunConfig(classes=bad)


def test_a_queued_run_takes_the_dataset_classes_and_a_changed_folder_is_refused(tmp_path, medley_cache):
    root = audiofolder(tmp_path / "q", per_class=3)
    config = with_dataset_classes(RunConfig(data=str(root)))
    assert config.classes == ("bird", "engine", "voice")
    assert with_dataset_classes(RunConfig()).classes == ()  # the default dataset: Medley-solos-DB's eight
    exposed = RunConfig(data=str(root), train=TrainConfig(outlier_exposure=0.5))  # as the recommended preset
    assert with_dataset_classes(exposed).train.outlier_exposure == 0.0  # its outliers may be this dataset's classes
    assert with_dataset_classes(RunConfig(train=TrainConfig(outlier_exposure=0.5))).train.outlier_exposure == 0.5
    write(root / "cello" / "a", 5)
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="queued for bird, engine, voice"):
        check_run_classes(ds, config)


def _predict(run_id: str, path: Path, cache: Path) -> dict:
    [answer] = json.loads(engine("predict", "--run", run_id, str(path), "--json", cache=cache).stdout)
    return answer


@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_training_on_a_custom_dataset_stores_its_class_names_end_to_end(layout, tmp_path):
    """CLI train, then the stored run, its confusion matrices, its predictions, a prediction and
    its bundle. (Seed groups: the next test.)"""
    from engine.runs.export import load_bundle, model_bundle
    from engine.runs.store import RunStore

    cache = tmp_path / "cache"
    if layout == "folders":
        data, names = audiofolder(tmp_path / "af"), ["bird", "engine", "voice"]
    else:
        data, names = csv_dataset(tmp_path / "cd", n_classes=12, per_class=4), [f"class {k:02d}" for k in range(12)]
    runs = [json.loads(engine("train", "--data", str(data), *TINY, "--json", cache=cache).stdout)]
    assert runs[0]["status"] == "finished", runs
    for trained in runs:
        meta = json.loads((cache / "runs" / trained["run_id"] / "meta.json").read_text())
        assert meta["class_names"] == names and meta["config"]["classes"] == names
        for split in ("validation", "test"):
            metrics = meta["run"]["metrics"][split]
            confusion = np.asarray(metrics["confusion"])
            assert confusion.shape == (len(names), len(names)) and confusion.sum() == metrics["n"] > 0
            assert len(metrics["per_class_accuracy"]) == len(names)
        predictions = json.loads((cache / "runs" / trained["run_id"] / "predictions.json").read_text())
        assert np.asarray(predictions["test"]["probs"]).shape[1] == len(names)
    run_id = runs[0]["run_id"]
    clip = next((data if layout == "folders" else data.parent / "audio").rglob("*.wav"))
    answer = _predict(run_id, clip, cache)
    assert list(answer["probabilities"]) == names and answer["label"] in names
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    try:
        assert class_names_of(store.get(run_id)) == tuple(names)
        predictor = load_bundle(model_bundle(store, run_id))
    finally:
        store.close()
    assert predictor.class_names == names
    bundled = predictor.predict_file(clip)
    assert list(bundled.probabilities) == names and bundled.label == answer["label"]


def test_seed_repeats_on_a_custom_dataset_train_as_one_group_with_its_classes(tmp_path, medley_cache):
    """The job manager's real loader and engine.learn.batched's grouped training on 12 classes."""
    from engine.runs.jobs import JobManager
    from engine.runs.store import RunStore

    data = csv_dataset(tmp_path / "g", n_classes=12, per_class=4)
    config = RunConfig(data=str(data)).with_values(**{"model.hidden_size": 8, "train.epochs": 2,
                                                      "train.batch_size": 16})
    store = RunStore(medley_cache / "runs.sqlite", medley_cache / "runs")
    manager = JobManager(store=store, device="cpu")
    try:
        ids = manager.repeat_seeds(config, [0, 1], name="pair")
        assert manager.wait(ids, timeout=300)
        for run_id in ids:
            record = store.get(run_id)
            assert record.status == "finished", record.error
            assert class_names_of(record) == tuple(f"class {k:02d}" for k in range(12))
            assert np.asarray(record.metrics["validation"]["confusion"]).shape == (12, 12)
            assert store.load_meta(run_id)["trained_in_group"]["size"] == 2
    finally:
        manager.shutdown()
        store.close()


# ---- bad input: a clear message, the rest usable, the store untouched ------------------------


def _stored(cache: Path) -> list[str]:
    from engine.runs.store import RunStore

    store = RunStore(cache / "runs.sqlite", cache / "runs")
    try:
        return sorted(r.id for r in store.list_runs())
    finally:
        store.close()


def test_a_folder_with_one_class_is_refused_and_nothing_is_queued_or_lost(tmp_path, medley_cache):
    from engine.runs.jobs import JobManager
    from engine.runs.store import RunStore

    root = tmp_path / "one"
    for i in range(3):
        write(root / "piano" / f"p{i}", 0, seed=i)
    with pytest.raises(TooFewClasses, match="1 class with audio \\('piano'\\).*at least 2"):
        load_dataset(root)
    store = RunStore(medley_cache / "runs.sqlite", medley_cache / "runs")
    before = store.create_run(RunConfig(), name="kept")
    manager = JobManager(store=store, data_loader=lambda c: {})
    try:
        with pytest.raises(TooFewClasses):
            manager.submit(RunConfig(data=str(root)))
        assert [r.id for r in store.list_runs()] == [before]  # refused before anything was stored
    finally:
        manager.shutdown()
        store.close()


def test_an_empty_class_folder_is_left_out_with_a_message(tmp_path, medley_cache):
    root = audiofolder(tmp_path / "e", per_class=3)
    (root / "silence").mkdir()
    (root / "silence" / "notes.txt").write_text("no audio here")
    ds = load_dataset(root)
    assert ds.class_names == ("bird", "engine", "voice")
    [message] = kinds(ds)["EmptyClass"]
    assert "silence" in message and "holds no audio file" in message and "left out" in message
    assert any("not audio" in note for note in ds.notes)


def test_labels_differing_only_in_case_or_whitespace_are_one_class_and_said_so(tmp_path, medley_cache):
    root = tmp_path / "clash"
    lines = ["path,label"]
    for i, label in enumerate(["Piano", "Piano", "piano ", " PIANO", "violin", "violin", "violin"]):
        path = write(root / f"f{i}", 0 if "iano" in label.lower() else 1, seed=i)
        lines.append(f"{path.name},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(root / "labels.csv")
    assert ds.class_names == ("Piano", "violin")  # the most frequent spelling names the class
    [message] = kinds(ds)["LabelClash"]
    assert "differ only in case or whitespace" in message and "'piano '" in message and "' PIANO'" in message
    assert ds.counts()["training"]["Piano"] + ds.counts()["validation"]["Piano"] + ds.counts()["test"]["Piano"] == 4


def test_a_csv_path_outside_its_folder_is_refused(tmp_path, medley_cache):
    outside = write(tmp_path / "secret" / "outside", 0)
    root = tmp_path / "data"
    csv_dataset(root, n_classes=2, per_class=3)
    (root / "link.wav").symlink_to(outside)
    with (root / "labels.csv").open("a") as handle:
        handle.write(f"../secret/{outside.name},class 00,x\n{outside},class 01,y\nlink.wav,class 00,z\n")
    ds = load_dataset(root / "labels.csv")
    refused = kinds(ds)["UnsafePath"]
    assert len(refused) == 3 and all("leads outside the CSV's folder" in m for m in refused)
    assert all(c.path.resolve().is_relative_to(root.resolve()) for c in ds.clips) and len(ds.clips) == 6


def test_duplicate_files_in_two_splits_are_named_and_kept_in_the_first(tmp_path, medley_cache):
    root = tmp_path / "dup"
    csv_path = csv_dataset(root, n_classes=2, per_class=4, splits=True)
    copy = root / "audio" / "copy_of_c0_0.wav"
    copy.write_bytes((root / "audio" / "c0_0.wav").read_bytes())  # c0_0 is in training
    with csv_path.open("a") as handle:
        handle.write(f"audio/{copy.name},class 00,other,test\naudio/c1_0.wav,class 01,s1-0,test\n")
    ds = load_dataset(csv_path)
    messages = kinds(ds)["DuplicateClip"]
    assert any("same audio as audio/c0_0.wav" in m and "in training there and in test here" in m for m in messages)
    assert any("listed again" in m and "training there, test here" in m for m in messages)
    assert not any(c.path.name == copy.name for c in ds.clips)
    assert [c.subset for c in ds.clips if c.path.name == "c1_0.wav"] == ["training"]


@pytest.mark.parametrize("bad", ["garbage", "empty", "no_samples"])
def test_unreadable_or_zero_length_audio_is_listed_and_the_rest_used(bad, tmp_path, medley_cache):
    root = audiofolder(tmp_path / "u", per_class=3)
    target = root / "bird" / "bad.wav"
    if bad == "garbage":
        target.write_bytes(b"RIFF not really a wave file" * 10)
    elif bad == "empty":
        target.write_bytes(b"")
    else:
        sf.write(target, np.zeros(0, dtype=np.float32), 16000)
    ds = load_dataset(root)
    [message] = kinds(ds)["AudioError"]
    expected = {"garbage": "unreadable audio", "empty": "empty (0 bytes)", "no_samples": "contains no samples"}[bad]
    assert message.startswith("bird/bad.wav") and expected in message
    assert len(ds.clips) == 9 + 3 and ds.class_names == ("bird", "engine", "voice")
    assert issubclass(errors.AudioError, EngineError)


def test_a_six_hour_file_is_refused_from_its_header_without_decoding_it(tmp_path, medley_cache, monkeypatch):
    root = audiofolder(tmp_path / "long", per_class=3)
    sf.write(root / "voice" / "six_hours.wav", np.zeros(6 * 3600 * 8, dtype=np.int16), 8)  # 8 Hz: 345 kB
    assert sf.info(str(root / "voice" / "six_hours.wav")).duration == 6 * 3600
    reads = []
    real = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: (reads.append(self.name), real(self, *a, **k))[1])
    ds = load_dataset(root)
    [message] = kinds(ds)["AudioTooLong"]
    assert "voice/six_hours.wav" in message and "6.0 h" in message and "limit is 20 minutes" in message
    assert not any("six_hours" in str(name) for name in reads)
    assert not any(c.path.name == "six_hours.wav" for c in ds.clips) and len(ds.clips) == 12


def test_every_problem_kind_names_an_engine_error(tmp_path, medley_cache):
    names = {"EmptyClass", "LabelClash", "UnsafePath", "DuplicateClip", "AudioTooLong", "AudioError", "DatasetError"}
    for name in names:
        assert issubclass(getattr(errors, name), EngineError)
    assert issubclass(errors.TooFewClasses, errors.DatasetError)


def test_a_broken_custom_dataset_fails_its_run_with_the_reason_and_keeps_the_store(tmp_path):
    cache = tmp_path / "cache"
    good = audiofolder(tmp_path / "good", per_class=3)
    first = json.loads(engine("train", "--data", str(good), *TINY, "--json", cache=cache).stdout)
    one = tmp_path / "one"
    write(one / "piano" / "a", 0)
    done = engine("train", "--data", str(one), *TINY, "--json", cache=cache, check=False)
    assert done.returncode != 0 and "at least 2" in done.stderr and "Traceback" not in done.stderr
    assert _stored(cache) == [first["run_id"]]
    assert (cache / "runs" / first["run_id"] / "model.pt").is_file()


def test_the_data_summary_command_reads_a_custom_dataset(tmp_path):
    root = audiofolder(tmp_path / "s", per_class=3)
    (root / "bird" / "broken.wav").write_bytes(b"nope")
    done = engine("data", "summary", "--data", str(root), "--json", cache=tmp_path / "cache")
    info = json.loads(done.stdout)
    assert info["class_names"] == ["bird", "engine", "voice"] and info["split_made"]
    assert [p["kind"] for p in info["problems"]] == ["AudioError"]


# ---- the Dataset page ---------------------------------------------------------------------


def test_the_dataset_page_shows_a_custom_folder(tmp_path, medley_cache, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui.common import plain

    root = audiofolder(tmp_path / "page", per_class=6)
    for i in range(2):  # a fourth class, too small to learn or validate
        write(root / "whistle" / f"w{i}", 7, seed=900 + i)
    (root / "engine" / "broken.wav").write_bytes(b"RIFF broken")
    (root / "empty class").mkdir()
    monkeypatch.setenv("MEDLEY_DATA", str(root))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
        at.run()
        assert not at.exception
        assert any("your own dataset (4 classes)" in c.value for c in at.caption)
        assert any("In use: **your own dataset at" in m.value for m in at.markdown)
        at.switch_page("pages/1_Dataset.py").run()
        assert not at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["clips"] == str(18 + 2 + 3) and metrics["problems"] == "2"  # 20 files, 3 of them 2 windows
        captions = "\n".join(c.value for c in at.caption)
        assert "your own dataset" in captions and "folders layout, 4 classes: bird, engine, voice, whistle" in captions
        infos = "\n".join(i.value for i in at.info)
        assert "Split made" in infos and plain(str(root / "medley_split.csv")) in infos and "windows" in infos
        warnings = "\n".join(w.value for w in at.warning)
        assert "whistle: 1 training clip, too few to learn it" in warnings
        problems = next(df.value for df in at.dataframe if "reason" in df.value.columns)
        assert set(problems["kind"]) == {"AudioError", "EmptyClass"}
        assert any("engine/broken.wav" in f for f in problems["file"])
        class_box = next(s for s in at.selectbox if s.label == "class")
        assert list(class_box.options) == ["bird", "engine", "voice", "whistle"]
        assert len(at.get("audio")) >= 1
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def test_files_added_later_join_the_stored_split_without_moving_the_others(tmp_path, medley_cache):
    root = audiofolder(tmp_path / "grow", per_class=6)
    before = {c.uuid: c.subset for c in load_dataset(root).clips}
    for i in range(6, 12):
        write(root / "bird" / f"new{i}", 0, seed=500 + i)
    ds = load_dataset(root)
    assert ds.split_made and any("6 file(s) new since the stored split" in n for n in ds.notes)
    after = {c.uuid: c.subset for c in ds.clips}
    assert all(after[u] == s for u, s in before.items())  # nobody moved
    new = [s for u, s in after.items() if "/new" in u]
    assert len(new) == 6 and {"training", "validation", "test"} == set(new)


def test_the_predict_page_answers_in_the_custom_dataset_classes(tmp_path, medley_cache, monkeypatch):
    """A run of a 3-class folder on the Predict page: an example clip of the dataset's test split is
    classified, and the answer, the probability chart and the model card speak of its three classes,
    never of the Medley-solos-DB eight."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from engine.core.config import ModelConfig, TrainConfig
    from engine.data.dataset import with_dataset_classes
    from engine.features.extract import load_features
    from engine.learn.train import train_run
    from engine.runs.store import RunStore

    root = audiofolder(tmp_path / "predict", per_class=6)
    monkeypatch.setenv("MEDLEY_DATA", str(root))
    monkeypatch.chdir(ROOT)
    config = with_dataset_classes(RunConfig(data=str(root), model=ModelConfig(hidden_size=8, num_layers=1, dropout=0.0),
                                            train=TrainConfig(epochs=2, batch_size=8, lr=1e-2)))
    result = train_run(config, load_features(load_dataset(root), config.features), device="cpu")
    store = RunStore()
    run_id = store.create_run(config, name="three classes", status="running")
    store.save_result(run_id, result)
    store.close()
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = AppTest.from_file(str(ROOT / "pages" / "4_Predict.py"), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        at.radio(key="predict_source").set_value("Dataset clip").run()
        assert not at.exception, [e.value for e in at.exception]
        [answer] = [m for m in at.metric if m.label == "Predicted instrument"]
        assert answer.value in ("bird", "engine", "voice")
        specs = " ".join(str(c.spec) for c in at.get("vega_lite_chart"))
        assert all(name in specs for name in ("bird", "engine", "voice"))
        assert not any(name in specs for name in ("clarinet", "violin", "trumpet"))
        card = " ".join(str(m.value) for m in at.markdown)
        assert "3 classes (bird, engine, voice)" in card
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()
