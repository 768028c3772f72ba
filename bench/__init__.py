"""Benchmarks of Nexus: run them all with `make bench` (python -m bench)."""
