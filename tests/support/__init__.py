"""Helpers shared by the tests, one package: the app under test and its fakes, broker control,
a pausable TCP proxy, a gateway driver, a consumer driver, the three-node cluster driver,
captured log lines, the fuzzing checks, and the sync event most tests need."""
