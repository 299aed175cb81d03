"""The dataset loader: both layouts, bad CSVs, broken audio files, fingerprint, summary."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.data import dataset as dataset_module
from engine.data.dataset import find_clip, load_dataset, resolve_dataset, summarize
from engine.core.errors import DatasetError
from engine.core.labels import CLASS_NAMES, SUBSETS

CSV = "Medley-solos-DB_metadata.csv"


def csv_path(root: Path) -> Path:
    return root / "annotation" / CSV


@pytest.mark.parametrize("layout", ["mirdata", "flat"])
def test_both_layouts_load_every_clip(make_tiny_dataset, layout):
    root = make_tiny_dataset(per_class=2, layout=layout)
    ds = load_dataset(root)
    assert ds.layout == layout
    assert ds.problems == []
    assert len(ds.clips) == 2 * 8 * 3
    for subset in SUBSETS:
        assert ds.counts()[subset] == {name: 2 for name in CLASS_NAMES}
        assert all(clip.subset == subset for clip in ds.subset(subset))
    clip = ds.clips[0]
    assert clip.path.exists()
    assert clip.path.name == f"Medley-solos-DB_{clip.subset}-{clip.label}_{clip.uuid}.wav"


def test_labels_and_song_ids_come_from_the_csv(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    ds = load_dataset(root)
    rows = [line.split(",") for line in csv_path(root).read_text().splitlines()[1:]]
    assert [(c.subset, c.label, c.song_id, c.uuid) for c in ds.clips] == [
        (r[0], int(r[2]), int(r[3]), r[4]) for r in rows
    ]
    assert find_clip(ds, rows[5][4]) == ds.clips[5]
    assert find_clip(ds, rows[5][4][:12]) == ds.clips[5]
    with pytest.raises(DatasetError, match="no clip with uuid 'nope'"):
        find_clip(ds, "nope")


def test_missing_folder_or_csv_is_one_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(DatasetError, match=f"no metadata CSV in .*{CSV}"):
        load_dataset(tmp_path)


def test_missing_column_is_named(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    lines = csv_path(root).read_text().splitlines()
    stripped = [",".join(line.split(",")[:4]) for line in lines]  # drop uuid4
    csv_path(root).write_text("\n".join(stripped))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) 'uuid4'; expected subset,instrument,instrument_id,song_id,uuid4"):
        load_dataset(root)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (bytes(range(256)) * 4, "not a text CSV"), (b"RIFF\x00\x00WAVEfmt ", "not a text CSV"),
     (b"just some words\nand more", "lacks column")],
)
def test_file_that_is_not_a_csv_is_a_dataset_error(make_tiny_dataset, content, message):
    root = make_tiny_dataset(per_class=1)
    csv_path(root).write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_bad_rows_become_problems(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    lines = csv_path(root).read_text().splitlines()
    first = lines[1].split(",")
    lines += [
        "bogus,clarinet,0,1,aaaa",
        "training,clarinet,9,1,bbbb",
        "training,clarinet,x,1,cccc",
        ",".join(first),  # duplicate uuid
    ]
    csv_path(root).write_text("\n".join(lines))
    ds = load_dataset(root)
    assert len(ds.clips) == 24
    reasons = [p.reason for p in ds.problems]
    assert len(reasons) == 4
    assert "unknown subset 'bogus'" in reasons[0]
    assert "instrument_id '9'" in reasons[1] and "instrument_id 'x'" in reasons[2]
    assert "duplicate uuid4" in reasons[3]
    assert ds.problems[0].file.endswith("line 26")


def test_broken_audio_files_are_skipped_and_reported(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    clips = load_dataset(root).clips
    clips[0].path.unlink()
    clips[1].path.write_bytes(b"")
    clips[2].path.write_bytes(os.urandom(3000))
    sf.write(clips[3].path, np.zeros(44100, np.float32), 44100, subtype="FLOAT")  # 1 s, too short
    sf.write(clips[4].path, np.zeros(65536, np.float32), 22050, subtype="FLOAT")  # right length at 22.05 kHz
    ds = load_dataset(root)
    assert len(ds.clips) == 24 - 4
    by_file = {p.file: p.reason for p in ds.problems}
    assert by_file[clips[0].path.name] == "file is missing"
    assert by_file[clips[1].path.name] == "file is empty (0 bytes)"
    assert by_file[clips[2].path.name].startswith("unreadable audio")
    assert "lasts 1.000 s" in by_file[clips[3].path.name]
    assert clips[4] in ds.clips
    summary = summarize(ds)
    assert summary["sample_rates"] == {"44100": 19, "22050": 1}
    assert len(summary["problems"]) == 4


def test_without_audio_check_only_missing_files_are_problems(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    clips = load_dataset(root).clips
    clips[0].path.unlink()
    clips[1].path.write_bytes(os.urandom(3000))
    ds = load_dataset(root, check_audio=False)
    assert [p.file for p in ds.problems] == [clips[0].path.name]
    assert len(ds.clips) == 23


def test_fingerprint_changes_with_csv_or_audio(make_tiny_dataset):
    root = make_tiny_dataset(per_class=1)
    first = load_dataset(root).fingerprint()
    assert load_dataset(root).fingerprint() == first
    clip = load_dataset(root).clips[3]
    sf.write(clip.path, np.ones(131072, np.float32) * 0.1, 44100, subtype="FLOAT")
    os.utime(clip.path, ns=(1, 1))
    second = load_dataset(root).fingerprint()
    assert second != first
    csv_path(root).write_text(csv_path(root).read_text() + "\n")
    assert load_dataset(root).fingerprint() != second


def test_summary_is_json_and_consistent(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    summary = json.loads(json.dumps(summarize(ds)))
    assert summary["layout"] == "mirdata" and summary["is_demo"] is False
    assert summary["totals"] == {"training": 24, "validation": 24, "test": 24}
    assert summary["sample_rates"] == {"44100": 72}
    assert summary["durations"]["min"] == pytest.approx(131072 / 44100)
    assert summary["durations"]["max"] == pytest.approx(131072 / 44100)
    assert sum(summary["class_share"]["test"].values()) == pytest.approx(1.0)
    assert summary["class_share"]["training"]["flute"] == pytest.approx(1 / 8)


def test_resolve_dataset_prefers_explicit_then_env(make_tiny_dataset, medley_cache, monkeypatch):
    explicit = make_tiny_dataset("explicit", per_class=1)
    env = make_tiny_dataset("env", per_class=1, layout="flat")
    monkeypatch.setenv("MEDLEY_DATA", str(env))
    assert resolve_dataset(str(explicit)).root == explicit
    assert resolve_dataset().root == env
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset(str(explicit / "nowhere"))
    with pytest.raises(DatasetError, match="unknown demo size 'huge'"):
        resolve_dataset("demo:huge")


def test_resolve_dataset_falls_back_to_the_demo(make_tiny_dataset, medley_cache, monkeypatch):
    made = []

    def fake_make_demo(size="default", root=None, *, progress=None, workers=2, seed=0):
        made.append(size)
        return make_tiny_dataset(f"demo-{size}", per_class=1, classes=(0, 1))

    monkeypatch.setitem(sys.modules, "engine.data.demo", types.SimpleNamespace(make_demo=fake_make_demo))
    monkeypatch.setattr(dataset_module.paths, "DEFAULT_MEDLEY_HOME", medley_cache / "no-such-home")
    assert resolve_dataset().is_demo
    assert resolve_dataset("demo:tiny").is_demo
    assert made == ["default", "tiny"]


def test_demo_names_resolve_from_the_environment_too(monkeypatch, tmp_path):
    from engine.data.dataset import demo_size

    monkeypatch.setenv("MEDLEY_DATA", "demo:tiny")
    assert demo_size(None) == demo_size("") == "tiny"
    assert demo_size("demo") == "default"
    monkeypatch.setenv("MEDLEY_DATA", str(tmp_path))
    assert demo_size(None) is None
