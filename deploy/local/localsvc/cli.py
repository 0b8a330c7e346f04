"""Command line: detached services that outlive the command, one work directory per service,
their state in DIR/service.json (see deploy/local/launch.py for usage)."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from pathlib import Path
from typing import Any

from .chroma import ChromaServer
from .common import LaunchError, say
from .connect import KafkaConnect
from .install import INSTALLABLE, install
from .kafka import KafkaBroker, kafka_wire_probe
from .kms import LocalKms
from .milvus import MilvusServer
from .postgres import PostgresServer
from .process import pid_alive, pid_cmdline, port_open, terminate
from .registry import SchemaRegistry
from .s3proxy import S3Proxy
from .seaweedfs import SeaweedFS

SERVICE_FILE = "service.json"
_MARKERS = {"kafka": "kafka.Kafka", "s3": "s3proxy", "seaweedfs": "weed server",
            "registry": "apicurio-registry"}
SERVICES = ["kafka", "s3", "seaweedfs", "registry"]
# the Debezium CDC source: PostgreSQL (its postmaster's argv) and the Connect worker
_MARKERS.update(postgres="pginstall/bin/postgres", connect="ConnectStandalone")
SERVICES += ["postgres", "connect"]
# local-kms, the KMS the aws-kms: key-encryption key is tested against
_MARKERS.update(kms="local-kms")
SERVICES += ["kms"]
# Milvus standalone, the milvus:http:// sink's server
_MARKERS.update(milvus="milvus run standalone")
SERVICES += ["milvus"]
# Chroma, the chroma: restore sink's server
_MARKERS.update(chroma="chroma run")
SERVICES += ["chroma"]


def _read_state(d: Path) -> dict[str, Any] | None:
    p = d / SERVICE_FILE
    if not p.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise LaunchError(f"{p}: unreadable ({e})") from None
    return data


def _write_state(d: Path, state: dict[str, Any]) -> None:
    tmp = d / f".{SERVICE_FILE}.tmp"
    tmp.touch(mode=0o600)  # it may hold passwords (SASL users, the S3 secret key)
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(d / SERVICE_FILE)


def _state_running(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    marker = _MARKERS.get(str(state.get("service")), "")
    return marker in pid_cmdline(pid)  # not a recycled pid


def cmd_start(
    service: str, d: Path, port: int | None, timeout: float | None,
    bootstrap: str | None = None, tls: bool = False,
) -> int:
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    state = _read_state(d)
    if state is not None:
        if state.get("service") != service:
            raise LaunchError(f"{d} holds a {state.get('service')} service; use another --dir")
        if _state_running(state):
            say(f"{service} already running in {d} (pid {state['pid']})")
            print(json.dumps(state, indent=2))
            return 0
        if port is None:
            port = state.get("port")  # same data, same address as last time
    svc: (KafkaBroker | S3Proxy | SeaweedFS | SchemaRegistry | PostgresServer | KafkaConnect
          | LocalKms | ChromaServer | MilvusServer)
    if service == "kafka":
        cport = state.get("controller_port") if state else None
        tls = tls or bool(state and state.get("security") == "sasl_ssl")  # as it was formatted
        svc = KafkaBroker(d, port, controller_port=cport, tie_to_parent=False,
                          security="sasl_ssl" if tls else "plaintext")
    elif service == "seaweedfs":
        ports = state.get("ports") if state else None
        svc = SeaweedFS(d, port, ports=ports, tie_to_parent=False)
    elif service == "registry":
        mport = state.get("management_port") if state else None
        tls = tls or bool(state and str(state.get("url", "")).startswith("https:"))
        svc = SchemaRegistry(d, port, management_port=mport, tie_to_parent=False, tls=tls)
    elif service == "postgres":
        svc = PostgresServer(d, port, tie_to_parent=False)
    elif service == "kms":
        svc = LocalKms(d, port, tie_to_parent=False)
    elif service == "milvus":
        svc = MilvusServer(d, port, ports=state.get("ports") if state else None,
                           tie_to_parent=False)
    elif service == "chroma":
        svc = ChromaServer(d, port, tie_to_parent=False)
    elif service == "connect":
        bootstrap = bootstrap or (state.get("bootstrap") if state else None)
        if not bootstrap:
            raise LaunchError(
                "start connect needs --bootstrap HOST:PORT, the Kafka broker's address "
                "(its \"bootstrap\" in `launch.py status --dir KAFKA_DIR`)"
            )
        svc = KafkaConnect(d, bootstrap, port, tie_to_parent=False)
    else:
        tls = tls or bool(state and str(state.get("endpoint_url", "")).startswith("https:"))
        svc = S3Proxy(d, port, tie_to_parent=False, tls=tls)
    say(f"starting {service} in {d} ...")
    svc.start() if timeout is None else svc.start(timeout)
    state = {
        **svc.describe(),
        "state": "running",
        "started_seconds": round(svc.started_seconds or 0, 2),
    }
    _write_state(d, state)
    say(f"{service} ready in {svc.started_seconds:.1f} s (log: {svc.log_path})")
    print(json.dumps(state, indent=2))
    return 0


def cmd_stop(service: str, d: Path) -> int:
    d = d.resolve()
    state = _read_state(d)
    if state is None:
        raise LaunchError(f"no {SERVICE_FILE} in {d}: nothing was started there")
    if state.get("service") != service:
        raise LaunchError(f"{d} holds a {state.get('service')} service, not {service}")
    if _state_running(state):
        pid = int(state["pid"])
        say(f"stopping {service} (pid {pid}) ...")
        terminate(pid, 30.0)
        say(f"{service} stopped")
    else:
        say(f"{service} in {d} is not running")
    _write_state(d, {**state, "pid": None, "state": "stopped"})
    return 0


def cmd_status(d: Path) -> int:
    d = d.resolve()
    state = _read_state(d)
    if state is None:
        raise LaunchError(f"no {SERVICE_FILE} in {d}: nothing was started there")
    running = _state_running(state)
    answering = False
    port = state.get("port")
    if running and isinstance(port, int):
        try:
            if state.get("service") == "kafka":
                ca = state.get("ca_file")
                kafka_wire_probe(port, tls=ssl.create_default_context(cafile=ca) if ca else None)
                answering = True
            else:
                answering = port_open(port)
        except (OSError, ValueError):
            answering = False
    print(
        json.dumps(
            {**state, "state": "running" if running else "stopped", "answering": answering},
            indent=2,
        )
    )
    return 0 if running and answering else 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="launch.py",
        description="Local Kafka broker and S3 servers (s3proxy; SeaweedFS, with Object Lock) "
        "for vecwal.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "install", help="fetch the Kafka jars, s3proxy and the Compose schema, build SeaweedFS, local-kms, "
        "promtool and helm, and the Chroma and Milvus servers' venvs, into "
        "$VECWAL_CACHE"
    )
    p.add_argument("only", nargs="*", metavar="SERVICE",
                   help=f"only these ({', '.join(INSTALLABLE)}; default: all)")
    p = sub.add_parser("start", help="start a service detached; prints DIR/service.json")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--dir", required=True, type=Path, help="work directory (data, logs, state)")
    p.add_argument("--port", type=int, help="listener port (default: last one used, else free)")
    p.add_argument("--timeout", type=float, help="seconds to wait until ready")
    p.add_argument("--bootstrap", help="connect: the Kafka broker (HOST:PORT)")
    p.add_argument("--sasl-ssl", "--tls", dest="tls", action="store_true",
                   help="kafka: a SASL_SSL listener (SCRAM-SHA-512 users, a throwaway CA); "
                   "s3, registry: HTTPS only; the CA file and credentials are in "
                   "DIR/service.json")
    p = sub.add_parser("stop", help="stop the service started in DIR")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--dir", required=True, type=Path)
    p = sub.add_parser("status", help="show DIR/service.json and whether it answers")
    p.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    unknown = [s for s in getattr(args, "only", []) if s not in INSTALLABLE]
    if unknown:
        ap.error(f"install: unknown service {unknown[0]!r} (choose from {', '.join(INSTALLABLE)})")
    try:
        if args.cmd == "install":
            install(tuple(args.only) or INSTALLABLE)
            return 0
        if args.cmd == "start":
            if args.tls and args.service not in ("kafka", "s3", "registry"):
                ap.error("--sasl-ssl/--tls applies to kafka, s3 and registry")
            return cmd_start(args.service, args.dir, args.port, args.timeout, args.bootstrap,
                             args.tls)
        if args.cmd == "stop":
            return cmd_stop(args.service, args.dir)
        return cmd_status(args.dir)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
