"""Helpers shared by the tests: broker control, a pausable TCP proxy, a gateway driver, the
fuzzing checks, and the sync event most tests need."""
