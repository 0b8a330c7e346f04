"""Native code, built by `pip install` (or `make setup`) from the C sources beside it."""
