#!/usr/bin/env bash
# Install vecwal into a new virtualenv: the one install path of the container image
# (deploy/container/Dockerfile runs it in its build stage) and of CI
# (tests/deploy/test_container.py runs it into a fresh virtualenv on every change), so the
# image's install steps cannot drift from what is tested.
#
#   deploy/container/install.sh PREFIX [SOURCE]
#
# PREFIX: the virtualenv to create (it must not exist). SOURCE: the vecwal source tree
# (default: this script's). PYTHON: the interpreter (default python3, 3.11 or newer).
# Building needs a C compiler, Python's headers and OpenSSL's (libssl-dev); running needs
# libcrypto. Every native part must build: the image never falls back to the Python codecs.
set -euo pipefail

prefix=${1:?usage: install.sh PREFIX [SOURCE]}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
python=${PYTHON:-python3}

if [ -e "$prefix" ]; then
    echo "install.sh: $prefix exists; give a new directory" >&2
    exit 2
fi
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check "$src"

# The native codecs and the per-tenant sealer are accelerators with Python references;
# an image without them is slower and says so only in a log line. Refuse to build one.
"$prefix/bin/python" - <<'PY'
import sys

from daemon.capture.native import event_codec
from daemon.keys.sealing import native
from daemon.native.records import record_codec

missing = [name for name, found in (("daemon.native.eventcodec", event_codec()),
                                    ("daemon.native.recordcodec", record_codec()),
                                    ("daemon.native.tenantseal", native())) if found is None]
if missing:
    sys.exit(f"install.sh: not built: {', '.join(missing)} (a C compiler, Python's headers "
             "and libssl-dev are needed at build time)")
PY
"$prefix/bin/vecwal" --version
