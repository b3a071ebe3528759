"""Helpers shared by the tests: broker control, a pausable TCP proxy, a gateway driver, the
fuzzing checks, the sync event most tests need, and the three-node cluster of
scripts/cluster.sh."""
