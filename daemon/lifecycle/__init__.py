"""The repository's lifecycle: retention policy, pins, the prune planner and its executor."""
