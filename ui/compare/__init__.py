"""Helpers of the Compare page, split by what they draw: plain data in (run records, metrics,
predictions), DataFrames and Altair charts out. No streamlit in here, so every function is
unit-testable; the page's sections that draw them are ui.runs_table, ui.ablation_builder,
ui.side_by_side, ui.significance_view, ui.mistakes_view, ui.flips and ui.generalisation_view.

Run records are `engine.runs.store.RunRecord`s (anything with id, name, tags, status, created,
config (RunConfig), group_key, metrics, history works).

- values          value_label, metric, partial_epochs, run_labels; METRICS, KEY_PARAMS
- table           runs_frame, filter_runs, sort_runs, table_columns, resolve_runs, param_diff
- builder         parse_values, build_grid (the ablation builder)
- curves          history_frame, seed_groups, group_bands, smooth_bands, band_chart, group_summary
- confusion       confusion_matrix_of, mean_confusion, confusion_domain, confusion_difference_frame/chart,
                  largest_mistake, mistakes_frame
- generalisation  per_class_frame, study_row, study_frame, gap_frame, gap_per_class_frame
- params          param_metric_chart, parallel_frame, parallel_coordinates_chart

Every public name is importable from `ui.compare` itself.
"""

from __future__ import annotations

from ui.compare.builder import build_grid, parse_values
from ui.compare.confusion import (
    confusion_difference_chart, confusion_difference_frame, confusion_domain, confusion_matrix_of, largest_mistake,
    cell_note, legend_title, mean_confusion, mistakes_frame, row_normalise,
)
from ui.compare.curves import band_chart, group_bands, group_summary, history_frame, seed_groups, smooth_bands
from ui.compare.generalisation import gap_frame, gap_per_class_frame, per_class_frame, study_frame, study_row
from ui.compare.params import (
    LABELLED_POINTS, number_tick, parallel_coordinates_chart, parallel_frame, param_metric_chart,
)
from ui.compare.table import (
    HEADLINE_METRICS, PROGRAM_HEADLINE, SORT_COLUMNS, all_tags, filter_runs, headline_metrics, is_test_metric,
    param_diff, param_names, param_values, resolve_runs, runs_frame, sort_runs, table_columns,
)
from ui.compare.values import (
    BASE_COLUMNS, KEY_PARAMS, METRIC_COLUMNS, METRICS, NONE_WORDS, metric, partial_epochs, run_labels, shown_diff,
    shown_params, shown_value, value_label,
)
