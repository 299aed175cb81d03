"""Comparisons of stored runs: the numbers (`stats`: McNemar, bootstrap, the seed-level test,
Holm), the same in words (`verdicts`), flips and agreement between runs (`agreement`) and an
ablation's rows and selection protocol (`ablation`). Works on run records and predictions; may
import every earlier stage, and is imported only by engine.cli and the dashboard.
"""
