"""servescope: benchmark LLM serving engines side by side."""

__version__ = "0.1.0"
