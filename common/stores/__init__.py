"""The stores: one module per store and backend."""
