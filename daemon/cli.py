"""The command line: the only place that parses argv, prints or exits."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import orjson
import structlog

from daemon import __version__
from daemon.changelog.repository import Repository
from daemon.config import Config, load_config
from daemon.errors import VecwalError
from daemon.keys.opener import store_opener as store_opener  # re-exported

log = structlog.get_logger("vecwal")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a job record keeps it, scrubbed
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    from daemon.logs import configure_logging

    configure_logging("warning", "auto")  # until a command reads its config
    try:
        code: int = args.handler(args)
        return code
    except VecwalError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vecwal",
        description="Continuous backup for vector databases: Kafka change stream -> "
                    "Avro change log in object storage.")
    p.add_argument("--version", action="version", version=f"vecwal {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="capture the configured topics until SIGTERM")
    run.add_argument("--config", required=True, help="TOML config file")
    run.add_argument("--until-caught-up", action="store_true",
                     help="exit 0 once every partition is durable up to the high watermark "
                          "seen at start (batch jobs, tests)")
    run.set_defaults(handler=_cmd_run)

    st = sub.add_parser("status", help="per partition: captured offset, lag, valid-through, RPO")
    st.add_argument("--config", required=True, help="TOML config file")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--no-kafka", action="store_true", help="read the store only")
    st.add_argument("--kafka-timeout", type=_seconds, default=10.0, metavar="S",
                    help="give up on Kafka after S seconds (default 10; the store's part is "
                         "printed either way)")
    st.set_defaults(handler=_cmd_status)

    from daemon.cli_audit import add_commands as add_audit_commands
    from daemon.cli_drill import add_command as add_drill_command
    from daemon.cli_lifecycle import add_commands as add_lifecycle_commands
    from daemon.cli_pins import add_commands as add_pin_commands
    from daemon.cli_restore import add_commands
    from daemon.cli_rollback import add_commands as add_rollback_commands
    from daemon.cli_sources import add_command as add_check_mapping_command
    from daemon.cli_verify import add_command as add_verify_command

    add_commands(sub, _open_repository)
    add_rollback_commands(sub, _open_repository)
    add_verify_command(sub, _open_repository)
    add_audit_commands(sub, _open_repository)
    add_drill_command(sub, _open_repository)
    add_lifecycle_commands(sub, _open_repository)
    add_pin_commands(sub, _open_repository)
    from daemon.cli_jobs import add_command as add_jobs_command

    add_jobs_command(sub, _open_repository)
    from daemon.cli_reconcile import add_command as add_reconcile_command

    add_reconcile_command(sub, _open_repository)
    add_check_mapping_command(sub)  # reads Kafka only: never opens the store
    from daemon.cli_keys import add_commands as add_key_commands
    from daemon.cli_keys import add_forget_command

    add_key_commands(sub)
    add_forget_command(sub)
    return p


def _open_repository(config: Config) -> Repository:
    """The configured repository; with [storage] object_lock, its bucket is checked first
    (Object Lock and versioning enabled, else a ConfigError naming the fix). A repository
    encrypted or not otherwise than the configuration says is refused (vecwal.json)."""
    import contextlib

    from daemon.errors import ObjectNotFound

    store = store_opener(config)()
    check_object_lock = getattr(store, "check_object_lock", None)
    if config.storage.object_lock and check_object_lock is not None:
        check_object_lock()
    repo = Repository(store)
    with contextlib.suppress(ObjectNotFound):  # a new repository: capture creates it
        repo.identity()
    return repo


def _cmd_run(args: argparse.Namespace) -> int:
    from daemon.capture.loop import CaptureLoop
    from daemon.health import HealthServer
    from daemon.logs import configure_logging
    from daemon.metrics import Metrics

    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)
    repo = _open_repository(config)
    metrics = Metrics()
    metrics.set_settings(config)  # the objectives the alerts compare with
    loop = CaptureLoop(config, repo, metrics)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, flushing", signal=signal.Signals(signum).name)
        loop.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if config.metrics.listen:
        import time

        def healthy() -> tuple[bool, str]:
            age = time.monotonic() - loop.heartbeat
            return age < 60, f"capture loop last ran {age:.1f}s ago"

        def ready() -> tuple[bool, str]:
            store_age = time.monotonic() - loop.store_ok_at
            ok = bool(loop.partitions) and store_age < 60
            return ok, f"partitions={len(loop.partitions)} store_ok_s_ago={store_age:.1f}"

        try:
            server = HealthServer(config.metrics.listen, metrics.registry, healthy, ready)
        except OSError as exc:
            raise VecwalError(f"cannot listen on {config.metrics.listen}: {exc}",
                              "set [metrics] listen to a free host:port, or \"\" to disable") from None
        server.start()
        log.info("metrics endpoint", address=f"http://{server.address}/metrics")
    from daemon.compaction_scheduler import CompactionScheduler
    from daemon.drill import DrillScheduler
    from daemon.jobs.watch import JobWatch
    from daemon.lifecycle.scheduler import PruneScheduler
    from daemon.reconcile_scheduler import ReconcileScheduler

    jobs = JobWatch(repo.store, metrics)  # the job metrics, from the records in the store
    scheduler = CompactionScheduler(config, repo, metrics, jobs.publish)
    drills = DrillScheduler(config, repo, metrics, jobs.publish)
    pruner = PruneScheduler(config, repo, metrics, jobs.publish)
    reconciler = ReconcileScheduler(config, repo, metrics)
    if not args.until_caught_up:
        jobs.start()
        scheduler.start()
        drills.start()
        pruner.start()
        reconciler.start()
    # What start-up made (modules, the Kafka and S3 clients) lives as long as the process:
    # frozen out of the cyclic GC, whose full collections walked all of it (about 1 us of an
    # Avro event's 19; 0.2-0.5 frozen, docs/performance.md 2026-12-07).
    gc.collect()
    gc.freeze()
    try:
        return loop.run(until_caught_up=args.until_caught_up)
    finally:
        jobs.stop()
        scheduler.stop()
        drills.stop()
        pruner.stop()
        reconciler.stop()
        if server is not None:
            server.stop()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds between 0 and "
                                         "3600 (e.g. 2.5)")
    return value


def _cmd_status(args: argparse.Namespace) -> int:
    from daemon.logs import configure_logging
    from daemon.status import collect_status, kafka_offsets_reader

    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)
    repo = _open_repository(config)
    report = collect_status(config, repo, None if args.no_kafka
                            else kafka_offsets_reader(config, timeout=args.kafka_timeout))
    # Kafka unreadable: the store's part is complete, and the exit code says the rest is not
    code = 1 if report.kafka_error else 0
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return code
    print(f"repository     {report.repository}")
    print(f"group          {report.group_id}")
    print(f"valid through  {report.valid_through or '-'}   RPO {_fmt(report.rpo_seconds, 's')}")
    if report.kafka_error:
        print(f"kafka          unreachable: {report.kafka_error}")
    headers = ["topic", "part", "captured", "high", "lag", "valid through", "rpo", "last error"]
    rows = [[r.topic, str(r.partition), _fmt(r.captured_offset), _fmt(r.high_watermark),
             _fmt(r.lag), r.valid_through or "-", _fmt(r.rpo_seconds, "s"),
             (f"{r.last_error['kind']}: {r.last_error['message']}"[:60]
              if r.last_error else "-")] for r in report.partitions]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if not rows:
        print("(nothing captured yet)")
    for r in report.partitions:
        if r.future_stamped and r.last_future_stamped:
            last = r.last_future_stamped
            print(f"warning: {r.topic}/{r.partition} has {r.future_stamped:,} events stamped "
                  f"ahead of when capture saw them (newest: offset {last['offset']}, "
                  f"{(last['timestamp_ms'] - last['seen_ms']) / 1000:.1f}s ahead): a clock is "
                  "fast; see docs/operations.md, 'Time'")
    print()
    if report.last_drill is None:
        print("last drill     none recorded (run `vecwal drill`, or set [drill] interval_s)")
    else:
        from daemon.cli_drill import print_drill

        print("last drill")
        print_drill(report.last_drill, indent="  ")
    from daemon.cli_jobs import print_jobs

    print()
    print("last job of each kind" + ("" if report.last_jobs else
                                     ": none recorded (`vecwal jobs` lists them)"))
    if report.last_jobs:
        print_jobs(list(report.last_jobs.values()), indent="  ")
    if code:
        print("\nerror: Kafka could not be read (above): lag and high watermarks are missing; "
              "the repository's part is complete (--no-kafka reads the store only)",
              file=sys.stderr)
    return code


def _fmt(value: object, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


if __name__ == "__main__":
    sys.exit(main())
