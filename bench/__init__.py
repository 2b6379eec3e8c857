"""The benchmark suite behind `make bench`: speed goals measured as ratios, ours against a baseline, side by side.

Benchmarks are not tests: nothing here fails on a slow machine. Each case runs our code and a baseline on the same
input, interleaved, in the same process and the same run, and reports the ratio of their medians against the goal
(issue 3). `python -m bench --help` for the options; `bench/cases/` holds one module per case.
"""
