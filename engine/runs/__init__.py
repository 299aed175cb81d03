"""Runs: the SQLite run store (`store`), run names (`naming`), a run's live Progress and hooks
(`progress`, with `eta`), the job queue with its training worker processes and heartbeat
(`jobs`), the Ray backend (`ray_backend`), CSV and model-bundle exports (`export`) and
queueing named ablations (`launch`). May import every earlier stage (core, data, features,
learn, predict), never engine.compare.
"""
