"""The Predict page in Streamlit's AppTest, with a real tiny run trained into a temporary store.

One tiny model is trained once for the module (72 synthetic clips, hidden size 8, 2 epochs)
and saved with RunStore.save_result; every test then gets fresh Streamlit caches and drives
pages/4_Predict.py: valid uploads, garbage, empty and silent files, a 7-second clip (window
by window), a dataset clip with its true label, the ?run= deep link, and an empty store.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import synth_clip, write_tiny_dataset
from engine.core.labels import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "4_Predict.py")
TIMEOUT = 120  # seconds per script run (torch import, librosa warm-up on a shared machine)


@contextlib.contextmanager
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, folder: str, runs: list[tuple[str, dict]]):
    """(cache folder, data folder, run ids): one finished tiny run per (name, config changes) on a
    72-clip dataset, stored in a temporary cache; $MEDLEY_CACHE / $MEDLEY_DATA set meanwhile."""
    from engine.core.config import ModelConfig, RunConfig, TrainConfig
    from engine.data.dataset import load_dataset
    from engine.features.extract import load_features
    from engine.runs.store import RunStore
    from engine.learn.train import train_run

    base = tmp_path_factory.mktemp(folder)
    data = write_tiny_dataset(base / "data")
    cache = base / "cache"
    cache.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDLEY_CACHE", str(cache))
        mp.setenv("MEDLEY_DATA", str(data))
        mp.chdir(ROOT)
        config = RunConfig(data=str(data), model=ModelConfig(hidden_size=8, num_layers=1, dropout=0.0),
                           train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, standardize=True))
        features = load_features(load_dataset(data), config.features)
        store = RunStore()
        ids = []
        for name, changes in runs:
            run_config = config.with_values(**changes)
            result = train_run(run_config, features, device="cpu")
            assert result.status == "finished", result.error
            ids.append(store.create_run(run_config, name=name, status="running"))
            store.save_result(ids[-1], result)
        store.close()
        yield cache, data, ids


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """(cache folder, data folder, run id) of one finished tiny run; env vars set for the module."""
    with tiny_runs(tmp_path_factory, "predict", [("tiny predict run", {})]) as (cache, data, [run_id]):
        yield cache, data, run_id


@pytest.fixture
def app(trained):
    """A fresh AppTest of the Predict page (Streamlit caches cleared before and after)."""
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    yield at
    st.cache_resource.clear()
    st.cache_data.clear()


def wav_bytes(seconds: float, label: int = 4, sr: int = 44100, gain: float = 1.0) -> bytes:
    """A WAV (float32, mono) of the tiny dataset's tone for class `label`."""
    rng = np.random.default_rng(label)
    y = synth_clip(label, rng, samples=int(seconds * sr), sr=sr) * gain
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    at.file_uploader[0].set_value([(name, data, "audio/wav") for name, data in files])
    at.run()
    assert not at.exception, at.exception
    return at


def test_valid_upload_shows_label_and_probabilities(app, trained):
    at = upload(app, ("piano.wav", wav_bytes(3.0)))
    assert not at.error
    metric = at.metric[0]
    assert metric.label == "Predicted instrument" and metric.value in CLASS_NAMES
    assert "probability" in metric.delta
    assert "**Probability of each class**" in texts(at)
    assert "Window by window" not in texts(at)  # one window only
    assert at.selectbox(key="run").value == trained[2]  # the newest (its ?run= binding: test_e2e_browser)


def test_model_card_beside_the_answer(app, trained):
    from engine.learn.trust import calibration_note
    from engine.runs.store import RunStore
    from ui.common import fmt_pct
    from ui.model_card import CARD_TITLE, trained_on_words

    at = upload(app, ("piano.wav", wav_bytes(3.0)))
    assert [e.label for e in at.expander] == [CARD_TITLE]
    card = "\n".join(str(m.value) for m in at.expander[0].markdown)
    store = RunStore()
    try:
        record = store.get(trained[2])
    finally:
        store.close()
    assert "Medley-solos-DB" in card and "synthetic" not in card  # the tiny test data is a Medley-style folder
    assert f"{fmt_pct(record.metrics['validation']['accuracy'])} on the validation split" in card
    assert f"{fmt_pct(record.metrics['test']['accuracy'])} on the test split" in card
    assert calibration_note(record.metrics) in card
    assert f"outside its {len(CLASS_NAMES)} classes" in card and "recording conditions unlike" in card
    assert "synthetic" in trained_on_words("demo:tiny") and "soundfont" in trained_on_words("demo")


def test_bad_files_give_named_errors_and_the_good_one_still_works(app):
    at = upload(app, ("garbage.wav", b"this is not audio at all" * 40), ("empty.wav", b""),
                ("good.wav", wav_bytes(3.0, label=7)), ("quiet.wav", wav_bytes(3.0, gain=0.0)))
    errors = [e.value for e in at.error]
    assert any("garbage.wav" in e and "not a readable audio file" in e for e in errors), errors
    assert not any("BytesIO" in e for e in errors), errors  # libsndfile noise removed
    assert any("empty.wav" in e and "empty" in e for e in errors), errors
    assert any("quiet.wav" in e and "silent" in e for e in errors), errors  # no usable signal: no label
    assert len(at.metric) == 1  # only good.wav is classified
    summary = at.dataframe[0].value
    assert list(summary["file"]) == ["garbage.wav", "empty.wav", "good.wav", "quiet.wav"]
    assert (summary["predicted"] != "–").tolist() == [False, False, True, False]  # "–", never None


def test_mp3_and_ogg_uploads_are_classified_like_the_wav(app):
    rng = np.random.default_rng(4)
    y = synth_clip(4, rng, samples=3 * 44100, sr=44100)
    files = [("tone.wav", wav_bytes(3.0))]
    for fmt, subtype in (("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS")):
        buffer = io.BytesIO()
        sf.write(buffer, y, 44100, format=fmt, subtype=subtype)
        files.append((f"tone.{fmt.lower()}", buffer.getvalue()))
    at = upload(app, *files)
    assert not at.error, [e.value for e in at.error]
    summary = at.dataframe[0].value
    assert list(summary["file"]) == ["tone.wav", "tone.mp3", "tone.ogg"]
    assert summary["predicted"].nunique() == 1, summary  # the same label for all three encodings


def test_predictions_are_cached_per_run_and_file_hash(app, monkeypatch):
    from engine.predict.predictor import Predictor

    calls = []
    original = Predictor.predict_samples
    monkeypatch.setattr(Predictor, "predict_samples", lambda self, y: calls.append(len(y)) or original(self, y))
    clip = wav_bytes(3.0, label=1)
    at = upload(app, ("a.wav", clip))
    assert len(calls) == 1
    at.run()  # a rerun (any widget change) does not classify again
    at.file_uploader[0].set_value([("a.wav", clip, "audio/wav"), ("same-bytes.wav", clip, "audio/wav")])
    at.run()
    assert not at.exception and len(at.metric) == 2
    assert len(calls) == 1  # same bytes, same run: one prediction


def test_record_mode_renders(app):
    app.run()
    app.radio(key="predict_source").set_value("Record").run()
    assert not app.exception, app.exception
    assert "Nothing to classify yet." in texts(app)


def test_long_clip_shows_windows(app):
    at = upload(app, ("long.wav", wav_bytes(7.0, label=2)))
    assert not at.error
    body = texts(at)
    assert "**Window by window** (2 windows of 3 s" in body
    assert "Overall answer:" in body


def test_oversized_upload_is_refused(app, monkeypatch):
    from ui import predict_view

    monkeypatch.setattr(predict_view, "MAX_UPLOAD_BYTES", 1000)
    at = upload(app, ("big.wav", wav_bytes(3.0)))
    errors = [e.value for e in at.error]
    assert any("big.wav" in e and "limit" in e for e in errors), errors


def test_dataset_clip_shows_true_label(app):
    app.run()
    app.radio(key="predict_source").set_value("Dataset clip").run()
    assert not app.exception, app.exception
    app.selectbox(key="predict_class").set_value(3).run()
    assert not app.exception, app.exception
    assert "True label: **flute**" in texts(app)
    assert len(app.metric) == 1
    verdicts = [s.value for s in app.success] + [e.value for e in app.error]
    assert any("the true label is **flute**" in v for v in verdicts), verdicts


def test_example_buttons_classify_a_test_clip_in_one_click(app, trained):
    from engine.data.dataset import load_dataset
    from ui.predict_view import EXAMPLE_CLIPS, example_clips

    examples = example_clips(load_dataset(trained[1]))
    assert len(examples) == EXAMPLE_CLIPS and len({c.label for c in examples}) == EXAMPLE_CLIPS
    assert all(c.subset == "test" for c in examples)
    app.run()
    assert not app.exception, app.exception
    buttons = [b for b in app.button if b.key and b.key.startswith("predict_example_")]
    assert [b.label for b in buttons] == [f"▶ {CLASS_NAMES[c.label]}" for c in examples]
    assert not app.metric  # nothing classified before the click
    pick = examples[-1]
    app.button(key=f"predict_example_{pick.label}").click().run()
    assert not app.exception, app.exception
    assert app.radio(key="predict_source").value == "Dataset clip"
    assert app.selectbox(key="predict_clip").value == pick.uuid
    assert f"True label: **{CLASS_NAMES[pick.label]}**" in texts(app)
    assert len(app.metric) == 1
    verdicts = [s.value for s in app.success] + [e.value for e in app.error]
    assert any(f"the true label is **{CLASS_NAMES[pick.label]}**" in v for v in verdicts), verdicts


def test_run_query_param_selects_and_unknown_run_warns(app, trained):
    app.query_params["run"] = trained[2]
    app.run()
    assert app.selectbox[0].value == trained[2] and not app.warning
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = "r-nope"
    at.run()
    assert any("r-nope" in w.value for w in at.warning)
    assert at.selectbox[0].value == trained[2]


def test_no_finished_run_explains_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLEY_CACHE", str(tmp_path))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
        assert not at.exception
        assert "No finished run yet" in at.info[0].value and "Train" in at.info[0].value
        assert not at.file_uploader
    finally:
        st.cache_resource.clear()
