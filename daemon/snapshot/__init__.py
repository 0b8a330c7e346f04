"""Snapshots: the full state at a cut, in bucketed data files, committed by a manifest."""
