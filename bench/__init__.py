"""Benchmarks (not tests): each prints its measurement as a ratio against a baseline run in the
same process, plus absolute numbers. Run with `make bench`."""
