"""hintflow's benchmark suite: `python -m bench [--quick] [--smollm2 PATH] [--only NAME ...]` (docs/benchmarks.md)."""
