"""Validation inside a vector database, as a search engineer would check it after a restore:

- what the engine holds, re-read point by point: every vector and every acl as written;
- counts the engine gives, per collection and per tenant;
- kNN probes: sampled restored vectors as queries must come back first, and the engine's
  top-10 must agree with a numpy brute-force top-10 over the restored vectors (recall at
  least ``MIN_RECALL``; a result tied with the 10th best counts as agreeing);
- metadata filter probes: stored values picked from the data, filtered in the engine,
  compared with the expected id set;
- tenant and acl probes: searches scoped to one tenant or principal see nobody else's
  records, and selecting by tenant or principal gives exactly the expected ids.

Every failed check names the ids (``tenant/id``, at most ``SHOWN``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from daemon.restore.sinks.engine import Truth, Where
from daemon.restore.validate import Check

if TYPE_CHECKING:
    from daemon.restore.sinks.engine import EngineSink

K = 10
QUERIES = 16
"""kNN probe queries per collection."""
MIN_RECALL = 0.95
FILTER_PROBES = 3
TENANT_PROBES = 8
PRINCIPAL_PROBES = 6
"""Principals probed per collection (spread over the sorted list); each is one filtered
select and one scoped search. Every record's acl is compared point by point anyway."""
SHOWN = 10
SEED = 20261126


def run_probes(sink: EngineSink) -> list[Check]:
    checks: list[Check] = []
    if not sink.scans:
        sink.read_back()
    for name, truth in sorted(sink.truth.items()):
        if not truth.keys:
            continue
        prober = _Prober(sink, name, truth)
        checks += prober.stored()
        checks += prober.counts()
        checks += prober.knn()
        checks += prober.filters()
        checks += prober.tenants()
        checks += prober.principals()
    return checks


class _Prober:
    def __init__(self, sink: EngineSink, name: str, truth: Truth) -> None:
        self.sink, self.name, self.truth = sink, name, truth
        self.engine = sink.engine
        self.target = sink.target(name)
        self.rng = np.random.default_rng(SEED)

    def who(self, keys: Any) -> str:
        shown = []
        for key in sorted(keys)[:SHOWN]:
            row = self.truth.row(key)
            shown.append(key if row is None else f"{self.truth.tenants[row]}/{self.truth.ids[row]}")
        more = len(keys) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    def check(self, what: str, ok: bool, detail: str) -> Check:
        return Check(f"{self.name}: {what}", ok, detail)

    # -- what the engine holds --------------------------------------------------------------
    def stored(self) -> list[Check]:
        scan = self.sink.scans[self.name]
        n = len(self.truth.keys)
        out = [
            self.check("vectors as written", not scan.vector_mismatch,
                       f"{n - len(scan.vector_mismatch)} of {n} equal" if not scan.vector_mismatch
                       else f"{len(scan.vector_mismatch)} differ: {self.who(scan.vector_mismatch)}"),
            self.check("acl kept", not scan.acl_mismatch,
                       f"{n} records, every acl as written" if not scan.acl_mismatch
                       else f"{len(scan.acl_mismatch)} changed: {self.who(scan.acl_mismatch)}"),
        ]
        if scan.unknown:
            out.append(self.check("no unknown points", False,
                                  f"{len(scan.unknown)} points not written: {self.who(scan.unknown)}"))
        return out

    def counts(self) -> list[Check]:
        want = len(self.truth.keys)
        got = self.engine.count(self.target)
        per: dict[str, int] = {}
        for t in self.truth.tenants:
            per[t] = per.get(t, 0) + 1
        wrong = {t: (self.engine.count(self.target, Where(tenant=t)), n) for t, n in per.items()}
        wrong = {t: v for t, v in wrong.items() if v[0] != v[1]}
        return [
            self.check("engine count", got == want, f"engine {got}, restore {want}"),
            self.check("engine count per tenant", not wrong,
                       f"{len(per)} tenants agree" if not wrong else
                       "engine, restore: " + ", ".join(f"{t!r} {g} != {w}"
                                                       for t, (g, w) in sorted(wrong.items()))),
        ]

    # -- kNN ------------------------------------------------------------------------------
    def knn(self) -> list[Check]:
        x = self.truth.vectors
        n = len(x)
        k = min(K, n)
        rows = self.rng.choice(n, size=min(QUERIES, n), replace=False)
        scores = _scores(x, x[rows], self.truth.spec.metric)  # queries x n
        not_first, hits, total, low = [], 0, 0, []
        for qi, row in enumerate(rows):
            got = self.engine.search(self.target, x[row], k)
            best = scores[qi].max()
            first = self.truth.row(got[0]) if got else None
            # The nearest record comes first: under cosine and l2 that is the query's own (or
            # a duplicate of it); under dot product a longer vector may outrank it.
            if first is None or not np.isclose(scores[qi, first], best, rtol=1e-5, atol=1e-6):
                not_first.append(self.truth.keys[row])
            kth = np.partition(scores[qi], n - k)[n - k]
            tol = 1e-5 * max(1.0, abs(float(kth)))
            agree = sum(1 for key in got[:k] if (r := self.truth.row(key)) is not None
                        and scores[qi, r] >= kth - tol)
            hits += agree
            total += k
            if agree < k:
                low.append(self.truth.keys[row])
        recall = hits / total if total else 1.0
        nearest = "by dot product" if self.truth.spec.metric == "dot" else "itself"
        return [
            self.check("kNN nearest first", not not_first,
                       f"{len(rows)} sampled vectors: the nearest ({nearest}) came first"
                       if not not_first
                       else f"{len(not_first)} of {len(rows)} did not: {self.who(not_first)}"),
            self.check(f"kNN recall@{k} vs brute force", recall >= MIN_RECALL,
                       f"recall {recall:.3f} (at least {MIN_RECALL}) over {len(rows)} queries"
                       + (f"; short for {self.who(low)}" if low else "")),
        ]

    # -- filters ----------------------------------------------------------------------------
    def filters(self) -> list[Check]:
        parsed = [orjson.loads(m) if m else None for m in self.truth.metadata]
        picks: list[tuple[str, Any]] = []
        for row in self.rng.permutation(len(parsed)):
            meta = parsed[row]
            if not isinstance(meta, dict):
                continue
            for key, value in sorted(meta.items()):
                pick = (key, value)
                if _filterable(key, value) and pick not in picks:
                    picks.append(pick)
                    break
            if len(picks) >= FILTER_PROBES:
                break
        out = []
        for key, value in picks:
            want = {self.truth.keys[i] for i, m in enumerate(parsed) if isinstance(m, dict)
                    and key in m and type(m[key]) is type(value) and m[key] == value}
            got = self.engine.select(self.target, Where(metadata=(key, value)))
            out.append(self._set_check(f"filter metadata.{key} == {value!r}", got, want))
        return out

    # -- tenants and principals ---------------------------------------------------------------
    def tenants(self) -> list[Check]:
        by: dict[str, list[int]] = {}
        for i, t in enumerate(self.truth.tenants):
            by.setdefault(t, []).append(i)
        out = []
        for tenant in sorted(by)[:TENANT_PROBES]:
            rows = by[tenant]
            want = {self.truth.keys[i] for i in rows}
            out.append(self._set_check(f"tenant {tenant!r} selects its own", self.engine.select(
                self.target, Where(tenant=tenant)), want))
            seen = self.engine.search(self.target, self.truth.vectors[rows[0]], K,
                                      Where(tenant=tenant))
            foreign = [key for key in seen if key not in want]
            out.append(self.check(f"tenant {tenant!r} search sees no other tenant",
                                  bool(seen) and not foreign,
                                  f"{len(seen)} results, all {tenant!r}" if seen and not foreign
                                  else "no results" if not seen
                                  else f"other tenants' records: {self.who(foreign)}"))
        return out

    def principals(self) -> list[Check]:
        by: dict[str, set[str]] = {}
        for key, acl in zip(self.truth.keys, self.truth.acls, strict=True):
            for p in acl or ():
                by.setdefault(p, set()).add(key)
        out = []
        names = sorted(by)
        step = max(1, len(names) // PRINCIPAL_PROBES)
        for principal in names[::step][:PRINCIPAL_PROBES]:
            want = by[principal]
            out.append(self._set_check(f"acl {principal!r} selects its records",
                                       self.engine.select(self.target, Where(principal=principal)),
                                       want))
            row = self.truth.row(min(want))
            assert row is not None
            seen = self.engine.search(self.target, self.truth.vectors[row], K,
                                      Where(principal=principal))
            foreign = [key for key in seen if key not in want]
            out.append(self.check(f"acl {principal!r} search sees only its records",
                                  bool(seen) and not foreign,
                                  f"{len(seen)} results, all readable by {principal!r}"
                                  if seen and not foreign else "no results" if not seen
                                  else f"records it may not read: {self.who(foreign)}"))
        return out

    def _set_check(self, what: str, got: set[str], want: set[str]) -> Check:
        missing, unexpected = want - got, got - want
        if not missing and not unexpected:
            return self.check(what, True, f"{len(want)} ids as expected")
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {self.who(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {self.who(unexpected)}")
        return self.check(what, False, "; ".join(parts))


def _filterable(key: str, value: Any) -> bool:
    """A metadata value every engine filters on exactly: text or a (non-bool) integer."""
    simple_key = key.replace("_", "").isalnum()
    return simple_key and (isinstance(value, str) or
                           (isinstance(value, int) and not isinstance(value, bool)
                            and abs(value) < 2**53))


def _scores(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Higher is nearer, for each query against every vector (float64)."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        xn = x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-30)
        qn = q64 / np.maximum(np.linalg.norm(q64, axis=1, keepdims=True), 1e-30)
        result: np.ndarray = qn @ xn.T
        return result
    if metric == "dot":
        result = q64 @ x64.T
        return result
    sq: np.ndarray = (q64 ** 2).sum(1)[:, None] + (x64 ** 2).sum(1)[None, :] - 2 * q64 @ x64.T
    return -sq
