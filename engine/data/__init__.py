"""Audio and datasets: decoding any file to mono float32 (`audio`), training augmentation and the
held-out recording chains (`augment`), the built-in demo dataset (`demo`) and reading a
Medley-solos-DB folder into clips per split (`dataset`). May import engine.core only.
"""
