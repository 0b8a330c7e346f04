"""Job records: the key sorts by start and says the result, the command line keeps no
secret, JobRun tells succeeded, failed and refused apart and never lets its own record change
the job's outcome, and the job metrics come from the records in the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.errors import IntegrityError, StoreError, VecwalError
from daemon.jobs.record import JobKey, JobRecord, job_key, latest_jobs, list_job_keys, read_job
from daemon.jobs.run import JobRun
from daemon.jobs.scrub import scrub_argv, scrub_text
from daemon.jobs.watch import JobWatch
from daemon.lifecycle.listing import sort_listing
from daemon.metrics import Metrics
from daemon.objectstore import ObjectStore, open_store
from daemon.snapshot.lease import LeaseHeld

SECRETS = ("hunter2-pw", "s3cr3t-token", "k3y-material", "api-key-123", "raw-kek-bytes")


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path / 'repo'}")


def test_keys_sort_by_start_and_parse_back() -> None:
    early = job_key("restore", "0000000000999-0123abcd", "failed")
    late = job_key("restore", "1700000000000-00000000", "succeeded")
    assert early == "jobs/restore/0000000000999-0123abcd.failed.json"
    assert early < late, "zero-padded start ms: LIST order is time order"
    parsed = JobKey.parse(late)
    assert parsed == JobKey(late, "restore", "1700000000000-00000000", 1_700_000_000_000,
                            "succeeded")
    assert JobKey.parse("jobs/restore/17-x.succeeded.json") is None
    assert JobKey.parse("jobs/nosuchkind/1700000000000-00000000.succeeded.json") is None


def test_record_round_trips_and_prune_reads_its_time() -> None:
    rec = JobRecord("1700000000000-0123abcd", "verify", "2023-11-14T22:13:20.000Z",
                    1_700_000_000_000, result="failed", error_kind="IntegrityError")
    assert JobRecord.from_json(rec.to_json()) == rec
    listing, _ = sort_listing([(rec.key, 10), ("drills/1700000000001-abcdef12.json", 5)])
    assert listing.records == [(rec.key, "jobs", 1_700_000_000_000, 10),
                               ("drills/1700000000001-abcdef12.json", "drills",
                                1_700_000_000_001, 5)]


def test_scrub_removes_every_known_secret() -> None:
    argv = ["restore", "--config", "c.toml", "--into",
            "qdrant:https://admin:hunter2-pw@db.example:6333?api_key=api-key-123&x=1",
            "--password", "hunter2-pw", "--token=s3cr3t-token", "--api-key", "k3y-material",
            "--kek", "raw-kek-bytes", "--to", "now", "--keys", "--json",
            "s3://AKIA:s3cr3t-token@bucket/prefix"]
    out = scrub_argv(argv)
    text = " ".join(out)
    for secret in SECRETS:
        assert secret not in text, secret
    assert "qdrant:https://admin:***@db.example:6333?api_key=***&x=1" in out
    assert out[out.index("--to") + 1] == "now" and "--keys" in out and "--json" in out
    assert out[:3] == ["restore", "--config", "c.toml"]
    # Where the key is, is no secret: a key file's path, a variable's name, a KMS key id.
    for kek in ("keyfile:/etc/vecwal/kek", "env:VECWAL_KEK", "aws-kms:alias/vecwal"):
        assert scrub_argv(["--kek", kek]) == ["--kek", kek]
    assert scrub_argv(["--kek=oops"]) == ["--kek=***"]
    assert scrub_text("cannot reach s3://u:hunter2-pw@h/b") == "cannot reach s3://u:***@h/b"


def test_run_results(store: ObjectStore) -> None:
    with JobRun(store, "compaction", command=["compact", "--to", "x"]) as job:
        job.begin()
        job.count(bytes_read=10, records_written=2)
    rec = read_job(store, job.written or "")
    assert (rec.result, rec.bytes_read, rec.records_written) == ("succeeded", 10, 2)
    assert rec.command == ["vecwal", "compact", "--to", "x"] and rec.vecwal_version
    assert rec.ended_at_ms is not None and rec.ended_at_ms >= rec.started_at_ms

    with pytest.raises(VecwalError), JobRun(store, "restore") as job:
        raise VecwalError("bad --to", "give a time")  # before begin(): refused
    assert read_job(store, job.written or "").result == "refused"

    with pytest.raises(LeaseHeld), JobRun(store, "prune") as job:
        job.begin()
        raise LeaseHeld("held by another", "wait")  # a held lease is a refusal, always
    assert read_job(store, job.written or "").result == "refused"

    with pytest.raises(IntegrityError), JobRun(store, "verify") as job:
        job.begin()
        raise IntegrityError("segment s3://u:hunter2-pw@b/x truncated", "restore it")
    rec = read_job(store, job.written or "")
    assert (rec.result, rec.error_kind, rec.exit_code) == ("failed", "IntegrityError", 3)
    assert "hunter2-pw" not in (rec.error_message or "")

    with pytest.raises(KeyError), JobRun(store, "index") as job:
        raise KeyError("a bug")  # not a VecwalError: a failure even before begin()
    assert read_job(store, job.written or "").result == "failed"

    with JobRun(store, "drill") as job:
        job.begin()
        job.fail("validation", "2 checks failed")
    assert read_job(store, job.written or "").result == "failed"

    with pytest.raises(LeaseHeld), JobRun(store, "compaction", record_refused=False) as job:
        raise LeaseHeld("held", "")
    assert job.written is None, "a scheduler's refused turn is not recorded"
    assert [k.result for k in list_job_keys(store, "restore")] == ["refused"]
    assert set(latest_jobs(store)) == {"compaction", "restore", "prune", "verify", "index",
                                       "drill"}


class RefusingStore:
    """Every put fails: the job's own outcome must not change."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        raise StoreError("the store is down", "")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_record_that_cannot_be_written_changes_nothing(store: ObjectStore) -> None:
    down = RefusingStore(store)
    with JobRun(down, "restore") as job:  # type: ignore[arg-type]
        job.begin()
        job.exit_code(0)
    assert job.written is None
    with pytest.raises(IntegrityError), JobRun(down, "verify") as job:  # type: ignore[arg-type]
        job.begin()
        raise IntegrityError("damaged", "")  # the job's own error comes out unchanged


def _metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _value(m: Metrics, name: str, kind: str) -> float | None:
    return m.registry.get_sample_value(name, {"kind": kind})


def test_watch_seeds_from_the_store_then_observes_new_jobs_once(store: ObjectStore) -> None:
    def put(kind: str, start: int, result: str, took: float) -> JobRecord:
        rec = JobRecord(f"{start:013d}-0000000{start % 10}", kind, "", start, result,
                        ended_at_ms=start + int(took * 1000), duration_seconds=took)
        store.put(rec.key, rec.to_json(), create_only=True)
        return rec

    now = 1_800_000_000_000
    put("verify", now - 9000, "failed", 2.0)
    put("verify", now - 5000, "succeeded", 1.0)
    put("verify", now - 3000, "refused", 0.0)
    put("compaction", now - 8000, "succeeded", 3.0)
    m = _metrics()
    watch = JobWatch(store, m)
    watch.seed(now)
    assert _value(m, "vecwal_job_last_success_timestamp_seconds", "verify") == (now - 4000) / 1000
    assert _value(m, "vecwal_job_last_failure_timestamp_seconds", "verify") == (now - 7000) / 1000
    assert _value(m, "vecwal_job_last_success_timestamp_seconds", "compaction") == \
        (now - 5000) / 1000
    assert _value(m, "vecwal_job_duration_seconds_count", "verify") is None, \
        "jobs before the start are not observed again"
    assert watch.poll(now) == []

    new = put("verify", now + 1000, "failed", 4.0)  # by another process
    assert [r.id for r in watch.poll(now + 9000)] == [new.id]
    assert watch.poll(now + 9000) == [], "each record is observed once"
    assert _value(m, "vecwal_job_duration_seconds_count", "verify") == 1
    assert _value(m, "vecwal_job_duration_seconds_sum", "verify") == 4.0
    assert _value(m, "vecwal_job_last_failure_timestamp_seconds", "verify") == (now + 5000) / 1000
    mine = put("compaction", now + 2000, "succeeded", 1.5)  # this process's scheduler
    watch.publish(mine)
    assert watch.poll(now + 9000) == [], "published already"
    assert _value(m, "vecwal_job_duration_seconds_count", "compaction") == 1


def test_job_retention_keep_days_window_and_explicit() -> None:
    from daemon.config import RetentionConfig
    from daemon.lifecycle.policy import DAY_MS, Policy

    assert Policy.from_config(RetentionConfig(), 90).jobs_ms == 90 * DAY_MS
    assert Policy.from_config(RetentionConfig(), 0).jobs_ms is None, "0 keeps them"
    assert Policy.from_config(RetentionConfig(window="400d"), 90).jobs_ms == 400 * DAY_MS, \
        "never less than the window"
    assert Policy.from_config(RetentionConfig(window="400d", jobs="7d"), 90).jobs_ms == \
        7 * DAY_MS, "[retention] jobs, when set, is what the operator asked"
