"""Benchmarks: each script here measures one claim against its reference in the same run;
`python -m benchmarks` runs them all (benchmarks/runner.py)."""
