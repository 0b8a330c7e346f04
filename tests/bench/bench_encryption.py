"""What client-side encryption costs (issue 13's figures), each as a ratio against a baseline
measured in the same run, rounds rotating which variant goes first. Three variants: ``plain``,
``encrypted`` (every object sealed) and ``tenant`` (encrypted with ``per_tenant_keys``: each
tenant's record content also sealed under its own key; goals >= 0.7 for capture and restore):

1. capture: the same 768-dim events (JSON, as bench_capture), the same broker, captured with
   ``CaptureLoop.run(until_caught_up=True)`` into a ``file://`` repository and into the S3
   server, plain and with ``[encryption] enabled = true, kek = "keyfile:..."`` (the store
   opened as ``vecwal run`` opens it, ``daemon.cli.store_opener``); events/s, first message to
   every event durable, and the ratio encrypted / plain per store. Goal >= 0.85.
2. restore: the same N records (a snapshot plus log events after it, bench_restore's
   repository) written twice, through a plain ``file://`` store and through an
   ``EncryptedStore`` over one (``daemon.keys.opener.open_encrypted``), each restored to
   ``dir:`` in a child process with the same worker count (``bench_restore.child_restore``);
   seconds, records/s and the ratio of rates encrypted / plain. Goal >= 0.8.

As context, the raw seal and open rates of ``daemon.objectstore.sealed`` on one core (one
thread, a 32 MiB object), beside a plain copy of as many bytes, and the whole-object ``get``
of a ``file://`` store plain and encrypted.

    python -m tests.bench.bench_encryption [--parts seal,capture,restore]
        [--events 40000] [--format json] [--stores file,s3] [--capture-rounds 5]
        [--records 1000000] [--log-events 100000] [--restore-rounds 3] [--workers 2]

Figures on stdout as JSON, progress on stderr. The restore part needs two repositories and
one restore output at a time on disk (about 3.6 KB per record and log event each: some 12 GB
at the defaults); it checks the free space first.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.changelog.repository import Repository
from daemon.keys.opener import open_encrypted
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantKeys
from daemon.logs import configure_logging
from daemon.objectstore import ObjectStore, open_store
from daemon.objectstore import sealed as sl
from daemon.objectstore.encrypted import WRAPPED_SIZE
from daemon.restore.sinks.opening import opening_sink
from daemon.spans import Gathered
from tests.bench.bench_capture import CoresBusy, capture
from tests.bench.bench_restore import child_restore, spawn
from tests.bench.restore_repo import Pool, mixed_ops, say, write_log, write_snapshot
from tests.bench.services import services
from tests.bench.workload import event_pool, produce_n

MODULE = "tests.bench.bench_encryption"
VARIANTS = ("plain", "encrypted", "tenant")
GOALS = {"encrypted": 0.8, "tenant": 0.7}
"""Restore: each variant's goal as a share of plain's rate (issue 13)."""
"""``tenant``: encrypted with ``per_tenant_keys`` (each tenant's content sealed by its own key)."""
MiB = 1 << 20


def key_file(directory: Path) -> str:
    """A new local KEK, 32 random bytes readable by its owner only; its ``kek`` setting."""
    path = directory / "bench.kek"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(sl.KEY_BYTES))
    return f"keyfile:{path}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def orders(rounds: int, variants: tuple[str, ...] = VARIANTS) -> list[tuple[str, ...]]:
    """The variants' order in each round, rotated: each goes first as often as the others."""
    k = len(variants)
    return [variants[r % k:] + variants[:r % k] for r in range(rounds)]


def ratios(plain: list[float], other: list[float]) -> dict[str, Any]:
    """Rate ratios other / plain from seconds: of the medians, and the median per round."""
    pairs = list(zip(plain, other, strict=True))
    return {"ratio": round(median(plain) / median(other), 3),
            "ratio_per_round_median": round(median([p / o for p, o in pairs]), 3),
            "ratios_per_round": [round(p / o, 3) for p, o in pairs]}


# -- 0. seal and open on one core ---------------------------------------------------------------
def seal_rates(size: int = 32 * MiB, reps: int = 7) -> dict[str, Any]:
    """MB/s (10^6 bytes of plaintext a second) of ``sealed.seal`` and ``sealed.open_all`` of one
    ``size``-byte object, one thread, median of ``reps``; for scale, a copy and an allocation
    of as many bytes and AES-GCM alone (the same chunks, into a buffer reused); and ``get`` and
    ``put`` of the object in a ``file://`` repository, plain and encrypted (page cache)."""

    def rate(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return round(size / median(times) / 1e6)

    data = bytearray(os.urandom(size))
    data_key, wrapped = os.urandom(sl.KEY_BYTES), os.urandom(WRAPPED_SIZE)
    blob = bytes(sl.seal(data, "data/docs/b0.avro", data_key, wrapped))
    assert sl.open_all(blob, "data/docs/b0.avro", data_key) == data
    out: dict[str, Any] = {
        "object_bytes": size, "chunk_bytes": 1 << sl.DEFAULT_CHUNK_LOG2, "reps": reps,
        "seal_mb_per_s": rate(lambda: sl.seal(data, "data/docs/b0.avro", data_key, wrapped)),
        "open_mb_per_s": rate(lambda: sl.open_all(blob, "data/docs/b0.avro", data_key)),
        "copy_mb_per_s": rate(lambda: bytes(data)),
        "alloc_mb_per_s": rate(lambda: bytearray(size)),
    }
    # AES-GCM alone, chunk by chunk into a buffer reused: what sealing costs without the
    # buffers seal and open allocate (fresh pages are what the rates above mostly pay for).
    aead, aad, step = AESGCM(data_key), b"aad", 1 << sl.DEFAULT_CHUNK_LOG2
    nonces = [os.urandom(12) for _ in range(size // step)]
    sealed = bytearray(size + len(nonces) * sl.TAG)
    plain, chunks = memoryview(data), memoryview(sealed)

    def crypt(encrypt: bool) -> None:
        stride = step + sl.TAG
        for i, nonce in enumerate(nonces):
            c, p = chunks[i * stride:(i + 1) * stride], plain[i * step:(i + 1) * step]
            if encrypt:
                aead.encrypt_into(nonce, p, aad, c)
            else:
                aead.decrypt_into(nonce, c, aad, p)

    # A segment as capture hands it over: its datums as pieces (3,200 bytes each), sealed
    # joined first (before 2026-12-07) or from the pieces (spans.Gathered).
    datums = [memoryview(data)[a:a + 3200] for a in range(0, size, 3200)]
    out["seal_joined_pieces_mb_per_s"] = rate(
        lambda: sl.seal(b"".join(datums), "log/t/p=00000/a.avro", data_key, wrapped))
    out["seal_pieces_mb_per_s"] = rate(
        lambda: sl.seal(Gathered(list(datums)), "log/t/p=00000/a.avro", data_key, wrapped))
    out["aes_gcm_encrypt_mb_per_s"] = rate(functools.partial(crypt, True))
    out["aes_gcm_decrypt_mb_per_s"] = rate(functools.partial(crypt, False))
    with tempfile.TemporaryDirectory(prefix="vecwal-bench-seal-") as tmp:
        kek = key_file(Path(tmp))
        stores: dict[str, ObjectStore] = {
            "plain": open_store(f"file://{tmp}/plain"),
            "encrypted": open_encrypted(functools.partial(open_store, f"file://{tmp}/enc"), kek)}
        for name, store in stores.items():
            store.put("data/docs/b0.avro", data)
            assert store.get("data/docs/b0.avro") == data
            out[f"store_get_{name}_mb_per_s"] = rate(functools.partial(store.get,
                                                                        "data/docs/b0.avro"))
            out[f"store_put_{name}_mb_per_s"] = rate(functools.partial(store.put,
                                                                        "data/docs/b1.avro", data))
            store.close()
    say(f"seal of a segment's pieces {out['seal_pieces_mb_per_s']:,} MB/s, joined first "
        f"{out['seal_joined_pieces_mb_per_s']:,} MB/s")
    say(f"seal {out['seal_mb_per_s']:,} MB/s, open {out['open_mb_per_s']:,} MB/s (AES-GCM "
        f"alone {out['aes_gcm_encrypt_mb_per_s']:,} / {out['aes_gcm_decrypt_mb_per_s']:,}; "
        f"copy {out['copy_mb_per_s']:,}, allocation {out['alloc_mb_per_s']:,}); file:// get "
        f"plain {out['store_get_plain_mb_per_s']:,} MB/s, encrypted "
        f"{out['store_get_encrypted_mb_per_s']:,} MB/s")
    return out


# -- 1. capture -----------------------------------------------------------------------------------
def run_capture(args: argparse.Namespace) -> dict[str, Any]:
    n, fmt = args.events, args.format
    results: dict[str, Any] = {}
    with services() as svc:
        kek = key_file(svc.workdir)
        tables: dict[str, dict[str, Any] | None] = {
            "plain": None, "encrypted": {"enabled": True, "kek": kek},
            "tenant": {"enabled": True, "kek": kek, "per_tenant_keys": True}}
        topic = svc.topic(partitions=3)
        produced = produce_n(svc.bootstrap, topic, event_pool(fmt), n)
        say(f"produced {n:,} {fmt} events in {produced:.1f}s")
        for store in args.stores.split(","):
            seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
            cores: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r, order in enumerate(orders(args.capture_rounds)):
                for variant in order:
                    with CoresBusy() as busy:
                        seconds[variant].append(capture(svc, topic, fmt, n, store,
                                                        encryption=tables[variant]))
                    cores[variant].append(busy.cores)
                say(f"{fmt}/{store} round {r} ({order[0]} first): " + ", ".join(
                    f"{v} {n / seconds[v][-1]:,.0f}/s ({cores[v][-1]:.2f} cores busy)"
                    for v in VARIANTS))
            rate = {v: n / median(seconds[v]) for v in VARIANTS}
            results[f"{fmt}/{store}"] = {
                "events": n, "rounds": args.capture_rounds,
                **{f"{v}_events_per_s": round(rate[v]) for v in VARIANTS},
                **{f"{v}_cores_busy": round(median(cores[v]), 2) for v in VARIANTS},
                "encrypted": ratios(seconds["plain"], seconds["encrypted"]),
                "tenant": ratios(seconds["plain"], seconds["tenant"]),
                "goal_encrypted_0_85": rate["encrypted"] / rate["plain"] >= 0.85,
                "goal_tenant_0_7": rate["tenant"] / rate["plain"] >= 0.7,
            }
    return results


class SealedPool(Pool):
    """bench_restore's Pool, each record's content sealed under its tenant's key as capture
    seals it (``per_tenant_keys``)."""

    def __init__(self, dim: int, sealer: TenantSealer) -> None:
        super().__init__(dim)
        self.sealer = sealer

    def change(self, i: int, version: int, op: str, offset: int, timestamp: int
               ) -> dict[str, Any]:
        return self.sealer.seal(super().change(i, version, op, offset, timestamp))


# -- 2. restore -----------------------------------------------------------------------------------
def disk_needed(records: int, log_events: int, dim: int) -> int:
    """Bytes at peak: two repositories and one restore output, each about (4 x dim + 500)
    bytes per record and log event (3.5 KB at 768 dims: bench_restore's 3.52 GB snapshot of
    1M), plus a tenth."""
    per = 4 * dim + 500
    return int(3 * (records + log_events) * per * 1.1)


def warm(root: Path) -> None:
    """Read every file of ``root`` (into the page cache) before a restore reads it, so each
    variant starts from the same place: this VM's kernel pages out memory not touched for
    about a minute (DAMON, `kdamond`, action pageout, min age 12 x 5 s), and a repository's
    files are a round apart, so without this some restores read from the disk and others
    not, by chance."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def layout(root: Path) -> dict[str, int]:
    """A restore output's files and their sizes: the two restores must write the same."""
    return {str(f.relative_to(root)): f.stat().st_size for f in sorted(root.rglob("*"))
            if f.is_file()}


def run_restore(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    variants = tuple(args.variants.split(","))
    if variants[0] != "plain" or not set(variants) <= set(VARIANTS):
        raise SystemExit(f"--variants: plain first, then any of {VARIANTS[1:]}")
    n, m = args.records, args.log_events
    need, free = disk_needed(n, m, args.dim), shutil.disk_usage(work).free
    say(f"restore: {n:,} records x {args.dim} + {m:,} log events; about {need / 1e9:.1f} GB "
        f"of disk needed at peak, {free / 1e9:.1f} GB free under {work}")
    if free < need:
        raise SystemExit(f"not enough disk under {work}: {need / 1e9:.1f} GB needed, "
                         f"{free / 1e9:.1f} GB free (--workdir elsewhere, or fewer --records)")
    kek = key_file(work)
    roots = {v: work / f"repo-{v}" for v in variants}
    openers: dict[str, Callable[[], ObjectStore]] = {
        v: functools.partial(open_encrypted, functools.partial(
            open_store, f"file://{roots[v]}"), kek, per_tenant_keys=v == "tenant")
        for v in variants[1:]}
    openers["plain"] = functools.partial(open_store, f"file://{roots['plain']}")
    built = {}
    for variant in variants:  # the same records: Pool and mixed_ops are deterministic
        repo = Repository(openers[variant]())
        pool = SealedPool(args.dim, TenantSealer(TenantKeys.of(repo.store))) \
            if variant == "tenant" else Pool(args.dim)
        b = write_snapshot(repo, pool, n, args.buckets or None)
        write_log(repo, pool, b, mixed_ops(n, m, seed=5))
        repo.store.close()
        built[variant] = b
        say(f"built {variant} in {sum(b.seconds.values()):.0f}s: snapshot "
            f"{b.snapshot_bytes / 1e9:.2f} GB in {b.buckets} buckets, log "
            f"{b.log_bytes / 1e6:.0f} MB in {b.log_segments} segments; "
            f"{tree_bytes(roots[variant]) / 1e9:.3f} GB on disk")
    expected = built["plain"].expected_records
    assert all(built[v].expected_records == expected for v in variants)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    layouts: dict[str, dict[str, int]] = {}
    for r, order in enumerate(orders(args.restore_rounds, variants)):
        for variant in order:
            dest = work / f"restore-{variant}-{r}"
            cmd = ["--child", "restore", "--repo", str(roots[variant]), "--out", str(dest),
                   "--workers", str(args.workers)]
            if variant != "plain":
                cmd += ["--kek", kek] + (["--per-tenant"] if variant == "tenant" else [])
            warm(roots[variant])
            res, _ = spawn(cmd, MODULE)
            assert res["records"] == expected, (variant, res["records"], expected)
            layouts.setdefault(variant, layout(dest))
            shutil.rmtree(dest)
            runs[variant].append(res)
        say(f"round {r} ({order[0]} first): " + ", ".join(
            f"{v} {expected / runs[v][-1]['execute_s']:,.0f} records/s (execute "
            f"{runs[v][-1]['execute_s']:.2f}s, CPU {runs[v][-1]['cpu_execute_s']:.2f}s "
            f"{runs[v][-1]['usage_execute']}, peak RSS "
            f"{runs[v][-1]['peak_rss_tree_execute_mb']} MB)" for v in variants))
    for v in variants[1:]:  # per-tenant: the same files, bytes differ only in sealed content
        assert layouts["plain"].keys() == layouts[v].keys(), v
    if "encrypted" in variants:
        assert layouts["plain"] == layouts["encrypted"], "the restores wrote different files"

    def summary(variant: str) -> dict[str, Any]:
        rs = runs[variant]
        exec_s = median([x["execute_s"] for x in rs])
        return {
            "plan_s": round(median([x["plan_s"] for x in rs]), 2),
            "execute_s": round(exec_s, 2),
            "validate_s": round(median([x["validate_s"] for x in rs]), 2),
            "rto_s": round(median([x["plan_s"] + x["execute_s"] for x in rs]), 2),
            "cpu_execute_s": round(median([x["cpu_execute_s"] for x in rs]), 2),
            "usage_execute_per_round": [x["usage_execute"] for x in rs],
            "records_per_s": round(expected / exec_s),
            "bytes_read": rs[0]["bytes_read"],
            "rchar_execute": rs[0]["rchar_execute"],
            "repository_bytes_on_disk": tree_bytes(roots[variant]),
            "peak_rss_tree_execute_mb": median([x["peak_rss_tree_execute_mb"] for x in rs]),
            "workers": rs[0]["workers"],
        }

    out = {v: summary(v) for v in variants}
    b = built["plain"]
    execute = {v: [x["execute_s"] for x in runs[v]] for v in variants}
    cpu = {v: [x["cpu_execute_s"] for x in runs[v]] for v in variants}  # the tree's CPU time
    return {
        "records": n, "dim": args.dim, "log_events": m, "buckets": b.buckets,
        "records_out": expected, "snapshot_bytes": b.snapshot_bytes, "log_bytes": b.log_bytes,
        "rounds": args.restore_rounds,
        "build_s": {v: round(sum(built[v].seconds.values()), 1) for v in variants},
        **out,
        **{f"{v}_vs_plain": ratios(execute["plain"], execute[v]) for v in variants[1:]},
        **{f"cpu_{v}_vs_plain": ratios(cpu["plain"], cpu[v]) for v in variants[1:]},
        **{f"goal_{v}_{GOALS[v]}".replace(".", "_"): median(execute["plain"])
           / median(execute[v]) >= GOALS[v] for v in variants[1:]},
    }


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="seal,capture,restore")
    ap.add_argument("--events", type=int, default=40_000, help="capture: events produced")
    ap.add_argument("--format", default="json", choices=["json", "avro"])
    ap.add_argument("--stores", default="file,s3", help="capture: file, s3 or both")
    ap.add_argument("--capture-rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=1_000_000, help="restore: snapshot records")
    ap.add_argument("--log-events", type=int, default=100_000,
                    help="restore: log events after the snapshot (bench_restore's mix)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--buckets", type=int, default=0, help="0: as the compactor chooses")
    ap.add_argument("--restore-rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="restore: plain first, then encrypted and/or tenant (a pair alternates)")
    ap.add_argument("--workers", type=int, default=2, help="restore: worker processes")
    ap.add_argument("--workdir", default=None, help="restore: default a new directory in $TMPDIR")
    ap.add_argument("--child", choices=["restore"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--kek", help=argparse.SUPPRESS)
    ap.add_argument("--per-tenant", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    if args.child == "restore":
        opener = None if not args.kek else functools.partial(
            open_encrypted, functools.partial(open_store, f"file://{args.repo}"), args.kek,
            per_tenant_keys=args.per_tenant)
        wrap = None
        if args.per_tenant:
            assert opener is not None
            wrap = functools.partial(opening_sink, open_store=opener)
        res = child_restore(args.repo, args.out, None, "now", args.workers, opener, wrap)
        print(orjson.dumps(res).decode())
        return res

    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    if "seal" in parts:
        results["seal_one_core"] = seal_rates()
    if "capture" in parts:
        results["capture"] = run_capture(args)
    if "restore" in parts:
        work = Path(tempfile.mkdtemp(prefix="vecwal-bench-encryption-", dir=args.workdir))
        try:
            results["restore"] = run_restore(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


if __name__ == "__main__":
    main()
