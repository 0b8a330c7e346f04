"""The Compose specification's JSON schema, for deploy/compose/compose.yaml's check
(tests/deploy/test_compose.py runs ``check-jsonschema --schemafile`` with it).

The official ``compose-spec.json`` ships inside the Go module of the reference Compose loader,
``github.com/compose-spec/compose-go/v2`` (``schema/compose-spec.json``, the file
``docker compose`` itself validates against; Apache-2.0). ``go mod download`` fetches the
pinned module (a zip of a few MB, nothing is built) into the Go module cache of the SeaweedFS
build (``install.go_workspace()``), and the schema is copied out to

    $VECWAL_CACHE/compose-spec-<version>/compose-spec.json

``$COMPOSE_SCHEMA`` names another copy of the schema to use instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .common import LaunchError, say
from .install import _install_lock, _run_go, cache_dir, go_executable, go_workspace

COMPOSE_GO_MODULE = "github.com/compose-spec/compose-go/v2"
COMPOSE_GO_VERSION = "v2.16.2"
"""The newest compose-go the Go module proxy served that builds on this machine's Go 1.26."""
SCHEMA_IN_MODULE = "schema/compose-spec.json"


def compose_schema_file() -> Path:
    return cache_dir() / f"compose-spec-{COMPOSE_GO_VERSION}" / "compose-spec.json"


def compose_schema_path() -> Path:
    """``$COMPOSE_SCHEMA`` when set, else the pinned schema (fetched now when not cached)."""
    env = os.environ.get("COMPOSE_SCHEMA", "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise LaunchError(f"COMPOSE_SCHEMA={env} is not a file: unset it to use the pinned "
                              "schema (deploy/local/launch.py install compose-schema)")
        return path
    return install_compose_schema()


def install_compose_schema() -> Path:
    """Copy compose-spec.json out of the pinned compose-go module into the cache."""
    target = compose_schema_file()
    if target.is_file():
        return target
    with _install_lock():
        if target.is_file():
            return target
        go_executable()
        target.parent.mkdir(parents=True, exist_ok=True)
        go_workspace().mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(".tmp-compose-spec-*"):  # of a killed install
            stale.unlink(missing_ok=True)
        say(f"fetching {COMPOSE_GO_MODULE}@{COMPOSE_GO_VERSION} from the Go module proxy for "
            f"its {SCHEMA_IN_MODULE} ...")
        info = json.loads(_run_go(["mod", "download", "-json",
                                   f"{COMPOSE_GO_MODULE}@{COMPOSE_GO_VERSION}"],
                                  cwd=go_workspace()))
        src = Path(info.get("Dir") or "") / SCHEMA_IN_MODULE
        if not src.is_file():
            raise LaunchError(f"go mod download gave no {SCHEMA_IN_MODULE} ({info.get('Error', info)})")
        schema = json.loads(src.read_text(encoding="utf-8"))
        if "services" not in schema.get("properties", {}):
            raise LaunchError(f"{src} is not the Compose specification's schema")
        tmp = target.parent / f".tmp-compose-spec-{os.getpid()}"
        shutil.copyfile(src, tmp)
        license_file = Path(info["Dir"]) / "LICENSE"
        if license_file.is_file():
            shutil.copyfile(license_file, target.parent / "LICENSE")
        tmp.rename(target)
        say(f"Compose schema ({COMPOSE_GO_MODULE}@{COMPOSE_GO_VERSION}): {target}")
    return target
