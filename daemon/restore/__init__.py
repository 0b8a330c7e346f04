"""Point-in-time restore: a pure planner, a streaming executor, sinks, and validation."""
