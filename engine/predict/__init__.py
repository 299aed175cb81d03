"""Prediction: a trained model (weights + RunConfig, from the store or a bundle) -> instrument
probabilities for any audio (`predictor`). It needs no run store (it is handed one), so it comes
before engine.runs. May import engine.core, engine.data, engine.features and engine.learn only.
"""
