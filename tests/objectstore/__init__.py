"""Tests of daemon.objectstore: one contract suite run against every backend."""
