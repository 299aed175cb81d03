"""The engine of Medley LSTM Lab: audio in, trained and compared instrument classifiers out.

Its subpackages are the stages of the data flow, in `STAGES` order: core (shared vocabulary:
labels, errors, paths, configs), data (audio, augmentation, the demo and the dataset),
features (clips -> feature arrays, cached), learn (models, metrics, training, seed groups,
presets), predict (a trained model -> probabilities for audio), runs (the run store, the job
queue, its worker processes and Ray, exports, launching ablations) and compare (statistics,
verdicts, agreement, ablation readouts). A stage imports only itself and earlier stages;
`engine.cli` (`python -m engine`) sits above them all, and the dashboard (`ui/`, `pages/`)
above the engine. tests/test_architecture.py checks both rules and that no import cycle exists.
"""

STAGES: tuple[str, ...] = ("core", "data", "features", "learn", "predict", "runs", "compare")
