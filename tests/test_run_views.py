"""Runs you can tell apart: one colour per run, partial runs marked, the store's change
signature (the Compare page's refresh), and the mistakes view's opening cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import tiny_config  # noqa: E402

from engine.runs.store import RunStore  # noqa: E402
from ui import charts  # noqa: E402
from ui import compare as cmp  # noqa: E402
from ui.colors import color_for, label_colors, run_colors, swatch  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def _hue(color: str) -> float:
    import colorsys

    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(r, g, b)[0] * 360


def test_consecutive_runs_get_clearly_different_colours() -> None:
    from ui.colors import OKABE_ITO

    colors = [color_for(n) for n in range(1, 11)]  # an ablation of 10 runs
    assert len(set(colors[:8])) == 8 and set(colors) <= set(OKABE_ITO)  # colour-blind-safe palette
    rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colors]
    for a, b in zip(rgb, rgb[1:]):  # neighbours (the cycle's wrap included) stay far apart
        assert sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5 > 120, (a, b)


def test_a_run_keeps_its_colour_whatever_else_exists_or_is_selected(store: RunStore) -> None:
    ids = [store.create_run(tiny_config(**{"train.seed": s}), name=f"r{s}") for s in range(4)]
    before = run_colors(store)
    assert run_colors(store, [ids[2]]) == {ids[2]: before[ids[2]]}  # any selection
    store.delete(ids[0])
    store.create_run(tiny_config(), name="new")
    after = run_colors(store)
    assert all(after[i] == before[i] for i in ids[1:])  # others deleted or added: unchanged


def test_charts_draw_each_run_in_its_colour(store: RunStore) -> None:
    import pandas as pd

    ids = [store.create_run(tiny_config(), name=n) for n in ("a", "b")]
    colors = run_colors(store)
    labels = {ids[0]: "a", ids[1]: "b"}
    by_label = label_colors(ids, labels, colors)
    hist = pd.DataFrame({"run": ["a", "a", "b", "b"], "epoch": [1, 2, 1, 2], "seconds": [1, 2, 1, 2],
                         "train_loss": [1, .5, 1, .6], "val_loss": [1, .7, 1, .8], "val_accuracy": [.2, .3, .2, .4]})
    for chart in (charts.loss_curves(hist, colors=by_label), charts.accuracy_curves(hist, colors=by_label)):
        scale = chart.to_dict()["encoding"]["color"]["scale"]
        assert scale["domain"] == ["a", "b"] and scale["range"] == [colors[ids[0]], colors[ids[1]]]
    # one run alone (the Train page) keeps the same colour
    alone = charts.loss_curves(hist[hist["run"] == "b"], colors=by_label).to_dict()["encoding"]["color"]["scale"]
    assert alone == {"domain": ["b"], "range": [colors[ids[1]]]}
    bars = charts.per_class_bars(pd.DataFrame({"class": ["x", "x"], "run": ["b", "a"], "accuracy": [.1, .2]}),
                                 colors=by_label).to_dict()["layer"][0]["encoding"]["color"]["scale"]
    assert bars == {"domain": ["b", "a"], "range": [colors[ids[1]], colors[ids[0]]]}
    assert swatch("#123456", "a <b>") == '<span class="run-swatch" title="a &lt;b>" style="color:#123456">&#9679;</span>'


def test_partial_runs_are_marked(store: RunStore) -> None:
    run_id = store.create_run(tiny_config(epochs=50), name="lr 1e-3")
    for epoch in range(1, 42):
        store.append_epoch(run_id, {"epoch": epoch, "val_accuracy": 0.5}, [1.0])
    store.set_status(run_id, "cancelled")
    full = store.create_run(tiny_config(epochs=2), name="full")
    for epoch in (1, 2):
        store.append_epoch(full, {"epoch": epoch, "val_accuracy": 0.5}, [1.0])
    store.set_status(full, "finished")
    runs = store.list_runs()
    labels = cmp.run_labels(runs)
    assert labels[run_id] == "lr 1e-3 (partial 41/50)" and labels[full] == "full"
    df = cmp.runs_frame(runs).set_index("id")
    assert bool(df.loc[run_id, "partial"]) and not bool(df.loc[full, "partial"])
    assert "partial" in cmp.table_columns(df.reset_index())


def test_signature_changes_when_runs_change_but_not_on_an_epoch(store: RunStore) -> None:
    first = store.signature()
    run_id = store.create_run(tiny_config(epochs=5))
    queued = store.signature()
    assert queued != first
    store.set_status(run_id, "running")
    running = store.signature()
    assert running == queued  # starting changes nothing a list shows that is worth a redraw
    store.append_epoch(run_id, {"epoch": 1}, [1.0])
    assert store.signature() == running  # epochs do not rerun the Compare page
    store.set_status(run_id, "finished")
    assert store.signature() != running
    finished = store.signature()
    store.rename(run_id, "renamed")
    assert store.signature() != finished


def test_largest_mistake_opens_the_mistakes_view() -> None:
    m = [[5, 1, 0], [7, 3, 2], [0, 0, 9]]
    assert cmp.largest_mistake(m) == (1, 0)
    assert cmp.largest_mistake([[3, 0], [0, 4]]) is None  # no mistakes at all
    assert cmp.largest_mistake(None) is None


def test_confusion_cells_hold_short_text() -> None:
    normalised = charts.confusion_heatmap([[3, 1], [0, 4]], ["a", "b"], normalize=True).to_dict()
    assert [r["label"] for r in next(iter(normalised["datasets"].values()))] == ["75", "25", "", "100"]
    counts = charts.confusion_heatmap([[3, 1], [0, 4]], ["a", "b"], normalize=False).to_dict()
    assert [r["label"] for r in next(iter(counts["datasets"].values()))] == ["3", "1", "", "4"]


def test_prediction_summary_never_says_none() -> None:
    from ui.predict_view import summary_frame

    df = summary_frame([{"file": "a.wav", "predicted": "piano", "confidence": 0.146, "problem": None},
                        {"file": "b.wav", "predicted": None, "confidence": None, "problem": "not audio"}])
    assert df.to_dict("records") == [
        {"file": "a.wav", "predicted": "piano", "confidence": "14.6%", "problem": ""},
        {"file": "b.wav", "predicted": "–", "confidence": "–", "problem": "not audio"}]
    assert "None" not in df.to_string() and "nan" not in df.to_string()


def test_prediction_bars_use_the_short_class_names_every_chart_uses() -> None:
    from engine.core.labels import CLASS_NAMES, SHORT_NAMES, short_name
    from ui.predict_view import probability_chart

    assert [short_name(n) for n in CLASS_NAMES] == list(SHORT_NAMES) and short_name("other") == "other"
    probs = {name: (0.6 if k == 5 else 0.4 / 7) for k, name in enumerate(CLASS_NAMES)}
    spec = probability_chart(probs, "tenor saxophone", "female singer").to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert [r["class"] for r in rows] == list(SHORT_NAMES)  # the Compare page's names, in the dataset's order
    assert [r["class"] for r in rows if r["predicted"] == "predicted"] == ["sax"]
    assert [r["class"] for r in rows if r["mark"]] == ["singer"]


def test_a_failing_step_names_the_file_and_the_page_goes_on() -> None:
    from engine.core.errors import AudioError
    from ui.predict_view import _guarded

    row: dict = {"problem": None}
    assert _guarded(row, "a.wav", lambda: 3, "cannot be used", "decoding") == 3 and row["problem"] is None

    def silent():
        raise AudioError("the clip is silent")

    def broken():
        raise RuntimeError("weights do not fit")

    assert _guarded(row, "a.wav", silent, "cannot be classified", "prediction") is None
    assert row["problem"] == "the clip is silent"
    assert _guarded(row, "a.wav", broken, "cannot be classified", "prediction") is None
    assert row["problem"] == "prediction failed: RuntimeError: weights do not fit"
