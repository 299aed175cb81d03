"""Shared vocabulary of every stage: class and subset names (`labels`), the one exception tree
(`errors`), where data and caches live (`paths`), the frozen configuration dataclasses and their
one parser (`config`) and process helpers (`processes`). Imports nothing else from the engine.
"""
