"""vecwal: continuous, event-log based backup for vector databases."""

__version__ = "0.1.0"
