"""Throughput and memory benchmarks (``make bench`` runs ``python -m bench``)."""
