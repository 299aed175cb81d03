"""Features: clips -> (n, frames, features) arrays, cached under cache/features (`extract`), and the
batched torch versions of the spectral features (`spectral`). May import engine.core and
engine.data only.
"""
