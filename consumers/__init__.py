"""The consuming side: validate each event, hand it to its handler, settle it exactly once."""
