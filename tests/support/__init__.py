"""Helpers for the fault tests: broker control through rabbitmqctl, and a pausable TCP proxy."""
