"""promtool for the alert rules' tests, helm for the chart's: ``$PROMTOOL`` (``$HELM``) when
set, else the pinned build of deploy/local/launch.py (``launch.py install promtool`` and
``install helm``, which `make test` runs first; built here from the Go module proxy into
$VECWAL_CACHE when the cache lacks it). Not obtainable is a failure, never a skip: the rules
and the chart would go unchecked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services import load_launcher


@pytest.fixture(scope="session")
def promtool() -> Path:
    launch = load_launcher()
    try:
        return Path(launch.promtool_executable())
    except Exception as e:  # LaunchError, or OSError from go
        pytest.fail(f"promtool is not available (deploy/local/launch.py install promtool): {e}",
                    pytrace=False)


@pytest.fixture(scope="session")
def helm() -> Path:
    launch = load_launcher()
    try:
        return Path(launch.helm_executable())
    except Exception as e:  # LaunchError, or OSError from go
        pytest.fail(f"helm is not available (deploy/local/launch.py install helm): {e}",
                    pytrace=False)
