"""The HTTP side of syncgate: sessions, the sync route, confirmed publishing."""
