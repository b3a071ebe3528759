"""Load and throughput benchmarks: syncgate against its ceilings and a FastAPI + FastStream peer.

`python -m bench --help` (or `make bench`) runs them and prints one table; see README.md.
"""
