"""Benchmarks: each module writes JSON + a markdown table into bench/results/."""
