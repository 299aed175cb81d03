"""The Compare page's "Is the difference real?": the verdict of engine.compare.stats between two runs or
seed groups (Holm-corrected over an ablation's rows or every pair), bootstrap intervals, the
ablation table and the confusion difference B - A. Tables come from ui.significance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from engine.compare import verdicts
from engine.core.labels import short_names_of
from ui import compare as cmp
from ui import defaults
from ui import significance as sig
from ui.common import percent_style, plain
from ui.compare_cache import accuracy_intervals, family


def units_of(finished: Sequence[Any], labels: Mapping[str, str], groups: Mapping[str, list], grouped: bool,
             split: str) -> dict[str, list]:
    """What is compared: each finished run alone, or each seed group (its runs evaluated on `split`)."""
    if not grouped:
        return {labels[r.id]: [r] for r in finished}
    units = {label: [r for r in members if (r.metrics or {}).get(split)] for label, members in groups.items()}
    return {k: v for k, v in units.items() if v}


def ranking_note() -> str:
    """What the verdict measures, in words: the same metric that ranks the runs (ui.defaults)."""
    return (f"The test compares **{defaults.HEADLINE_NAME}** (share of clips classified right), the metric "
            f"that ranks runs on every page; balanced accuracy (mean per-class recall) is shown beside it.")


def render(units: Mapping[str, list], split: str, normalize: bool, labels: Mapping[str, str]) -> None:
    """The section, for two or more units."""
    st.subheader("Is the difference real?")
    st.caption(f"On the **{split}** split (the *Split* selector above). {ranking_note()}")
    names = list(units)
    h1, h2, h3 = st.columns([2, 2, 1.5])
    name_a = h1.selectbox("A (reference, e.g. the ablation's base)", names, index=0, key="cmp_a")
    name_b = h2.selectbox("B", names, index=min(1, len(names) - 1), key="cmp_b")
    mode = h3.radio("Test", sig.MODES, key="cmp_family", disabled=len(names) < 3,
                    help="Every unit against A (an ablation's rows against its base), or every pair. "
                         "p-values are Holm-adjusted over the comparisons made.")
    runs_a, runs_b = units[name_a], units[name_b]
    stopped = [labels[r.id] for r in [*runs_a, *runs_b] if cmp.partial_epochs(r)]
    if stopped:
        st.warning(f"Partial: {plain(', '.join(stopped))} stopped before all its epochs, so this compares unequal "
                   "training budgets; a difference may be the missing epochs rather than the setting.")
    if name_a == name_b:
        st.info("Choose two different runs.")
        return
    pairs = tuple(sig.family_pairs(names, name_a, name_b, mode))
    key = tuple((label, tuple((r.id, r.finished) for r in members)) for label, members in units.items())
    rows = family(key, pairs, split)
    result = next(r for r in rows if (r["a"], r["b"]) == (name_a, name_b))
    st.markdown(f"**A** = {plain(name_a)}, **B** = {plain(name_b)}")
    if "error" in result:
        st.warning(f"Cannot test these two: {result['error']}")
    else:
        _verdict(result, runs_a, runs_b, name_a, name_b, split)
    if len(rows) > 1:
        what = "every selected run or seed group against A" if mode == sig.MODES[0] else "every pair"
        st.markdown(f"**Ablation table: {what}** ({split} split)")
        st.dataframe(percent_style(sig.family_frame(rows), ("accuracy A", "accuracy B")), hide_index=True,
                     width="stretch")
        tested = sum("error" not in r for r in rows)
        st.caption(verdicts.HOLM_NOTE.format(m=tested, alpha=0.05) + " Verdicts use the adjusted p.")
    _confusion_difference(runs_a, runs_b, split, normalize)


def _verdict(result: dict, runs_a: list, runs_b: list, name_a: str, name_b: str, split: str) -> None:
    (st.success if result["significant"] else st.info)(verdicts.verdict(result, "A", "B"))
    for note in verdicts.caveats(result, "A", "B"):
        st.caption(note)
    if result["family_size"] > 1:
        st.caption(verdicts.HOLM_NOTE.format(m=result["family_size"], alpha=result["alpha"]))
    st.caption(verdicts.method_why(result))
    if len(runs_a) == 1 and len(runs_b) == 1:
        ci = [(name_a, accuracy_intervals(runs_a[0].id, runs_a[0].finished, split)),
              (name_b, accuracy_intervals(runs_b[0].id, runs_b[0].finished, split))]
        st.dataframe(percent_style(pd.DataFrame([{"run": n, f"{split} accuracy": c["accuracy"],
                       "95% CI": f"{c['accuracy_ci'][0]:.1%} – {c['accuracy_ci'][1]:.1%}",
                       "balanced accuracy": c["balanced_accuracy"],
                       "95% CI (balanced)": f"{c['balanced_accuracy_ci'][0]:.1%} – {c['balanced_accuracy_ci'][1]:.1%}"}
                      for n, c in ci]), (f"{split} accuracy", "balanced accuracy")), hide_index=True)


def _confusion_difference(runs_a: list, runs_b: list, split: str, normalize: bool) -> None:
    """The confusion difference B - A (a seed group counts as its mean confusion matrix)."""
    conf_a = cmp.mean_confusion(runs_a, split)
    conf_b = cmp.mean_confusion(runs_b, split)
    if conf_a is None or conf_b is None:
        return
    per = ", mean over seeds" if max(len(runs_a), len(runs_b)) > 1 else ""
    st.markdown(f"**Confusion difference B - A ({split}{per})**: blue cells are what B fixed, red what it broke. "
                f"Each cell's number is {cmp.cell_note(normalize)}.")
    names = short_names_of(runs_a[0])
    if names != short_names_of(runs_b[0]):
        st.info("A and B were trained on different classes: their confusion matrices cannot be compared cell by cell.")
        return
    diff_df = cmp.confusion_difference_frame(conf_a, conf_b, normalize, names)
    st.altair_chart(cmp.confusion_difference_chart(diff_df, normalize=normalize, class_names=names), width="stretch")
    for sentence in verdicts.describe_confusion_difference(conf_a, conf_b, names):
        st.markdown(f"- {sentence}")
