"""The systemd units of deploy/systemd: ``systemd-analyze verify`` accepts them (and ``security``
rates the daemon's sandbox), and their promises are read from the files: the stop timeout is
above the daemon's shutdown timeout (read from the code), the commands are vecwal's, the
hardening is there, and every variable the environment file example names is one vecwal reads.

``systemd-analyze verify`` checks that ExecStart's program exists, so it runs on copies whose
``/opt/vecwal/bin/vecwal`` is this virtualenv's ``vecwal``; nothing else is changed. Where
systemd-analyze is not installed that test is skipped (it is here: systemd 252) and the
file checks below still run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import CaptureConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy/systemd"
SERVICE, DRILL, TIMER = (UNITS / n for n in ("vecwal.service", "vecwal-drill.service",
                                            "vecwal-drill.timer"))
ENV_EXAMPLE = UNITS / "vecwal.env.example"
INSTALLED = "/opt/vecwal/bin/vecwal"

HARDENING = {  # key -> the value it must have
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
    "AmbientCapabilities": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
    "SystemCallArchitectures": "native", "UMask": "0077", "User": "vecwal", "Group": "vecwal",
}


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value, in order (systemd allows a key more than once, which
    configparser does not)."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(span: str) -> float:
    """A systemd time span ("90", "90s", "1min 30s", "6h") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), span
    return sum(float(n) * units[u] for n, u in parts)


def env_file(path: Path) -> dict[str, str]:
    """NAME=value of every line, commented-out examples (``#NAME=value``) included."""
    return dict(m.groups() for m in re.finditer(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(),
                                               re.MULTILINE))


def test_the_stop_timeout_is_above_the_daemons_shutdown_timeout() -> None:
    service = unit(SERVICE)["Service"]
    [stop] = service["TimeoutStopSec"]
    shutdown = CaptureConfig().shutdown_timeout_s  # the default of [capture] shutdown_timeout_s
    assert seconds(stop) >= shutdown + 30, (stop, shutdown)  # the flush, then close and exit
    assert service["KillSignal"] == ["SIGTERM"] and service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2 3"]  # ConfigError, IntegrityError


def test_the_units_run_vecwal_with_the_config_file() -> None:
    [run] = unit(SERVICE)["Service"]["ExecStart"]
    assert shlex.split(run) == [INSTALLED, "run", "--config", "/etc/vecwal/vecwal.toml"]
    [drill] = unit(DRILL)["Service"]["ExecStart"]
    assert shlex.split(drill) == [INSTALLED, "drill", "--config", "/etc/vecwal/vecwal.toml"]
    assert unit(DRILL)["Service"]["Type"] == ["oneshot"]
    timer = unit(TIMER)
    assert timer["Timer"]["Unit"] == ["vecwal-drill.service"]
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.parametrize("path", [SERVICE, DRILL], ids=lambda p: p.name)
def test_the_services_are_hardened(path: Path) -> None:
    service = unit(path)["Service"]
    for key, want in HARDENING.items():
        assert service.get(key) == [want], (path.name, key, service.get(key))
    assert "@system-service" in service["SystemCallFilter"]
    writable = set(" ".join(service["ReadWritePaths"]).split())
    assert writable == {"/var/lib/vecwal", "/var/cache/vecwal"}
    assert service["StateDirectory"] == service["CacheDirectory"] == ["vecwal"]
    assert service["EnvironmentFile"] == ["-/etc/vecwal/vecwal.env"]


def test_every_variable_of_the_environment_files_is_one_vecwal_reads(tmp_path: Path) -> None:
    names = env_file(ENV_EXAMPLE)
    assert "VECWAL_KAFKA_CLIENT_SASL_PASSWORD" in names
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names.keys()
    assert all(n.startswith(("VECWAL_", "AWS_")) for n in names), names
    # VECWAL_KEK is the variable [encryption] kek = "env:VECWAL_KEK" names, as the file says
    kek = names.pop("VECWAL_KEK")
    assert kek == "" and '[encryption] kek = "env:VECWAL_KEK"' in ENV_EXAMPLE.read_text()
    environment = unit(SERVICE)["Service"]["Environment"]
    names.update(dict(w.split("=", 1) for line in environment for w in shlex.split(line)))
    config = tmp_path / "vecwal.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:9092"\ntopics = ["ingest"]\n'
                      f'[storage]\nurl = "file://{tmp_path}/repo"\n')
    loaded = load_config(config, names)  # a name that is no setting: ConfigError
    assert loaded.kafka.client["sasl.password"] == names["VECWAL_KAFKA_CLIENT_SASL_PASSWORD"]
    assert loaded.kafka.schema_registry["basic.auth.user.info"] == \
        names["VECWAL_KAFKA_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"]
    assert loaded.log.format == "json"  # the journal gets JSON lines
    assert loaded.metrics.listen == names["VECWAL_METRICS_LISTEN"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (the file checks still run)")
def test_systemd_analyze_verifies_the_units_and_rates_the_sandbox(tmp_path: Path) -> None:
    vecwal = Path(sys.executable).with_name("vecwal")
    assert vecwal.is_file(), "the virtualenv's vecwal script (pip install -e .)"
    for path in (SERVICE, DRILL, TIMER):
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, str(vecwal)))
    files = [str(tmp_path / p.name) for p in (SERVICE, DRILL, TIMER)]
    verify = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    for name in (SERVICE.name, DRILL.name):
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(tmp_path / name)],
            capture_output=True, text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", security.stdout)
        assert level, security.stdout[-2000:] + security.stderr
        # 0-10, lower is safer; "OK" is below 2.0. A plain unit with User= scores about 9.
        assert float(level.group(1)) <= 2.0 and level.group(2) == "OK", level.group(0)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_user_the_units_run_as(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    dry = subprocess.run(["systemd-sysusers", "--dry-run", f"--root={tmp_path}",
                          str(UNITS / "vecwal.sysusers")], capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    said = dry.stdout + dry.stderr
    assert "Creating group 'vecwal'" in said and "Creating user 'vecwal'" in said, said
    for path in (SERVICE, DRILL):
        assert unit(path)["Service"]["User"] == unit(path)["Service"]["Group"] == ["vecwal"]
