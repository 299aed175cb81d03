"""Runs: the SQLite run store (`store`), run names (`naming`), a run's live Progress and the
training hooks that keep it (`progress`, with `eta`), the job queue (`jobs`), its training
worker processes and a run's data loader (`worker`), the heartbeat and how a run's end is
recorded (`liveness`), the Ray backend (`ray_backend`), CSV and model-bundle exports (`export`)
and queueing named ablations (`launch`). May import every earlier stage (core, data, features,
learn, predict), never engine.compare.
"""
