"""Benchmarks behind `python -m em3 bench quality|efficiency`: the tables of docs/RESULTS.md."""
