"""The dashboard's defaults, in one place: every page and shared chart helper reads them here,
so that a loss curve, a confusion matrix or a ranking looks the same on Train, Compare, Predict
and the home page. No streamlit in here.

- LOG_SCALE_LOSS: loss curves on a log y axis (the study's own wish: early epochs no longer
  flatten the rest of the curve).
- NORMALISE_CONFUSION: confusion matrices as each row's share (per-class recall on the
  diagonal); raw counts would let the big classes (piano, violin) hide the small ones.
- HEADLINE_METRIC / HEADLINE_NAME: the metric that ranks runs. Accuracy (share of clips
  right), because the significance test (McNemar / the seed-level test) compares accuracies:
  the verdict then speaks of the metric that ranks the runs. Balanced accuracy is shown beside it.
- RANK_COLUMN: the runs table's column of that metric on the validation split (validation
  chooses, test reports).
"""

from __future__ import annotations

LOG_SCALE_LOSS: bool = True
NORMALISE_CONFUSION: bool = True
HEADLINE_METRIC: str = "accuracy"            # engine.learn.metrics key
HEADLINE_NAME: str = "accuracy"              # how the pages name it
RANK_COLUMN: str = "val acc"                 # ui.compare runs-table column that ranks runs
RANK_DESCRIPTION: str = "validation accuracy (share of validation clips classified right)"
