"""Live views of running and queued runs, made cheap to refresh: one-line progress texts, and
chart specs rebuilt only when the store has a new epoch (reading only the new step losses).

No streamlit in here (unit-testable). A page keeps one `LiveCharts` per session and calls
`update()` on its timer; when nothing new was stored, the cached Vega-Lite specs come back
unchanged, so the server builds nothing and the browser redraws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.runs.eta import fmt_duration, prep_words
from ui import charts

LIVE_POINTS = 400  # step-loss points drawn while a run trains (the EMA still uses every step)
# How often a running run's progress is redrawn, in the sidebar and on the Train page alike:
# both read the same line (progress_line) at the same pace, so they show the same stage.
PROGRESS_EVERY_S = 3.0


def progress_line(p: Mapping[str, Any], status: str, epochs_done: int, epochs: int,
                  behind: str | None = None) -> tuple[float, str]:
    """(fraction in [0, 1], one line of text) for a run's progress bar.

    p: the run's live progress (ui.common.job_progress dict: phase, fraction, epoch, epochs,
    step, steps_per_epoch, train_loss, val_accuracy, eta (s), message, data_done, data_total,
    prep_fraction, prep_eta (s), prep_stage),
    or {} when this server does not train it. status: the stored status. epochs_done/epochs:
    from the store. behind: display name of the run it waits for, when queued.
    """
    phase = p.get("phase") or status
    if phase == "queued" or (not p and status == "queued"):
        return 0.0, f"queued behind {behind}" if behind else "queued: starts when a slot is free"
    if phase == "loading data":  # one bar across every stage of preparing the data (PrepProgress)
        fraction = p.get("prep_fraction")
        if fraction is None:  # a report without it (an older worker): the stage's own share
            done, total = int(p.get("data_done") or 0), int(p.get("data_total") or 0)
            fraction = done / total if total else 0.0
        words = prep_words(float(fraction), p.get("prep_eta"), p.get("prep_stage") or "", p.get("message") or "")
        return min(1.0, max(0.0, float(fraction))), f"preparing features (before epoch 1): {words}"
    if phase == "evaluating":
        return 1.0, f"epoch {epochs}/{epochs} done · evaluating on validation and test"
    if phase == "training" and p.get("epochs"):
        parts = [f"epoch {max(1, int(p.get('epoch') or 1))}/{p['epochs']}"]
        if p.get("steps_per_epoch"):
            parts.append(f"step {p.get('step', 0)}/{p['steps_per_epoch']}")
        if p.get("train_loss") is not None:
            parts.append(f"loss {p['train_loss']:.3f}")
        if p.get("val_accuracy") is not None:
            parts.append(f"val acc. {100 * p['val_accuracy']:.1f}%")
        eta = p.get("eta")
        parts.append(f"about {fmt_duration(eta)} left" if eta is not None else "timing the first epoch")
        return min(1.0, max(0.0, float(p.get("fraction") or 0.0))), " · ".join(parts)
    fraction = epochs_done / epochs if epochs else 0.0
    return min(1.0, fraction), f"{status}: epoch {epochs_done}/{epochs}"


@dataclass
class LiveCharts:
    """Chart specs of one running run, rebuilt only when a new epoch is stored.

    `update(store, run_id, steps_per_epoch)` reads `store.epochs_done` (one cheap query); only
    when it changed does it read the new epochs' step losses and the history, and rebuild.
    Returns {"steps": spec | None, "accuracy": spec | None} (Vega-Lite dicts).
    """

    run_id: str | None = None
    epochs: int = -1
    losses: list[float] = field(default_factory=list)
    specs: dict[str, dict | None] = field(default_factory=lambda: {"steps": None, "accuracy": None})
    builds: int = 0  # how many times the specs were rebuilt (tests check that idle refreshes build nothing)

    def update(self, store: Any, run_id: str, steps_per_epoch: int | None = None,
               color: str | None = None) -> dict[str, dict | None]:
        """The specs (see the class); `color`: the run's colour (ui.colors)."""
        from ui.compare import history_frame

        epochs = store.epochs_done(run_id)
        if run_id != self.run_id or epochs < self.epochs:  # another run, or a resumed run restarting
            self.run_id, self.epochs, self.losses = run_id, 0, []
            self.specs = {"steps": None, "accuracy": None}
        if epochs == self.epochs:
            return self.specs
        self.losses += store.step_losses(run_id, since_epoch=self.epochs)
        self.epochs = epochs
        record = store.get(run_id)
        spe = steps_per_epoch or (len(self.losses) // epochs if epochs else None) or None
        self.specs = {
            "steps": charts.step_loss_chart(self.losses, steps_per_epoch=spe, max_points=LIVE_POINTS,
                                            color=color).to_dict() if self.losses else None,
            "accuracy": charts.accuracy_curves(  # the validation views, each named in the legend
                history_frame([record]), columns=charts.VALIDATION_CURVES,
                colors={record.name: color} if color else None).to_dict() if record.history else None,
        }
        self.builds += 1
        return self.specs
