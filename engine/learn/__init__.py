"""Learning: models built from their config (`model`; a model knows nothing of training), scores of
predictions (`metrics`, torch-free), the readable training loop (`train`), seed repeats trained
as one stacked model (`batched`) and the study's configurations (`presets`). May import
engine.core, engine.data and engine.features only.
"""
