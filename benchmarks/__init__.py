"""Benchmarks: measurements that print figures (not part of the library; they need extra packages)."""
