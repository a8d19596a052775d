"""Engine adapters: one module per API dialect."""
