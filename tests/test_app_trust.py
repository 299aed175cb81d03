"""Issue #24 on the pages: the Predict page says the probabilities are calibrated, warns in words
when a clip (or a window) is unlike the training data, and says so for runs trained before; the
Train page shows the reliability diagram (validation and test) with its methods named."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_app_predict import PAGE, ROOT, TIMEOUT, texts, tiny_runs, upload, wav_bytes  # noqa: E402

from engine.learn import ood
from engine.learn import trust  # noqa: E402


def _edit_metrics(cache: Path, run_id: str, edit) -> None:
    """Rewrite a stored run's metrics in the database (what the Predictor and the pages read)."""
    with sqlite3.connect(cache / "runs.sqlite") as con:
        metrics = json.loads(con.execute("SELECT metrics FROM runs WHERE id=?", (run_id,)).fetchone()[0])
        con.execute("UPDATE runs SET metrics=? WHERE id=?", (json.dumps(edit(metrics)), run_id))


def _flag_everything(metrics: dict) -> dict:
    metrics["ood"]["threshold"] = -1e9  # every score is above it
    return metrics


def _before_issue_24(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in trust.TRUST_KEYS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """(cache, flagging run id, old run id): a calibrated run whose OOD threshold flags every
    clip, and a run as stored before calibration and the OOD check existed."""
    with tiny_runs(tmp_path_factory, "trust", [("flags all", {}), ("before trust", {"train.seed": 1})]) as (cache, _, ids):
        _edit_metrics(cache, ids[0], _flag_everything)
        _edit_metrics(cache, ids[1], _before_issue_24)
        yield cache, ids[0], ids[1]


@pytest.fixture
def page(runs):
    st.cache_resource.clear()
    st.cache_data.clear()
    yield lambda run_id: _opened(AppTest.from_file(PAGE, default_timeout=TIMEOUT), run_id)
    st.cache_resource.clear()
    st.cache_data.clear()


def _opened(at: AppTest, run_id: str) -> AppTest:
    at.query_params["run"] = run_id
    return at


def test_flagged_clip_and_windows_get_the_warning_in_words(page, runs) -> None:
    at = upload(page(runs[1]), ("long.wav", wav_bytes(7.0, label=2)))
    warnings = [w.value for w in at.warning]
    assert trust.UNLIKE_TRAINING in warnings
    assert any("2 of 2 windows are unlike the recordings this model was trained on" in w for w in warnings)
    body = texts(at)
    assert "Probabilities calibrated: temperature scaling, T = " in body
    assert f"Out-of-distribution check ({ood.METHODS[trust.OOD_METHOD]})" in body
    assert "unlike the training recordings" in body


def test_a_run_from_before_says_uncalibrated_and_no_check(page, runs) -> None:
    at = upload(page(runs[2]), ("clip.wav", wav_bytes(3.0, label=4)))
    assert at.selectbox[0].value == runs[2]
    assert trust.UNLIKE_TRAINING not in [w.value for w in at.warning]
    body = texts(at)
    assert trust.UNCALIBRATED in body and trust.NO_OOD_CHECK in body


def _train_page(run_id: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/2_Train.py")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    return at


def test_train_page_shows_the_reliability_diagram_with_its_methods(runs) -> None:
    st.cache_resource.clear()
    at = _train_page(runs[1])
    body = texts(at)
    assert "**Calibration and out-of-distribution check**" in body
    assert "Guo et al. 2017" in body and "top-label ECE, 15 equal-width bins" in body
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    diagrams = [s for s in specs if "hconcat" in s and "validation: ECE" in json.dumps(s)]
    assert len(diagrams) == 1 and "test: ECE" in json.dumps(diagrams[0])
    before = _train_page(runs[2])
    assert trust.UNCALIBRATED in texts(before) and "Calibration and out-of-distribution check" in texts(before)
    st.cache_resource.clear()
