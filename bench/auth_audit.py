"""The cost of authentication + the audit trail on read and search, over HTTP on PostgreSQL.

The same reads (``GET /fhir/<type>/<id>``) and searches (``Observation?subject=…&code=…&_sort=-date``)
as bench/read_search.py, on the same kind of database (loaded the same way; ``--reuse`` keeps it), run
against the real server started twice per round, alternately:

* **off**: ``FHIR_AUTH_ENABLED=0 FHIR_AUDIT_ENABLED=0`` (no token, no AuditEvent);
* **on**: ``FHIR_AUTH_ENABLED=1 FHIR_AUDIT_ENABLED=1`` with a bearer token from the development issuer
  (``fhir-server dev-token``, a practitioner token with a purpose of use): every request verifies the
  token (signature, claims, scopes), and writes its AuditEvent (one INSERT in the request's unit of
  work, the entity list naming every resource returned).

* **on, no policy**: the same with ``FHIR_ACCESS_POLICY_ENABLED=0`` (scopes only: no role, agency,
  label or Consent filter), to show what the access policy itself costs.

``--rounds`` alternations (default 2) share out the noise of a busy machine; each figure is over
all rounds. The raw-PostgreSQL baselines of read_search.py (primary-key SELECT, indexed SELECT) are
measured in the same run. Target: on/off ratio at p50 ≤ 1.25 for read and for search.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness
from bench.read_search import OBS_SELECT, PK_SELECT, ready_dataset, sample, search_path, time_sql

TARGET = 1.25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20,000 resources, 500 reads, 200 searches")
    p.add_argument("--resources", type=int, default=None, help="database size (default 1,000,000; quick 20,000)")
    p.add_argument("--reads", type=int, default=None, help="random reads by id per round (default 2,000; quick 500)")
    p.add_argument("--searches", type=int, default=None, help="random searches per round (default 1,000; quick 200)")
    p.add_argument("--rounds", type=int, default=2, help="off/on alternations (default 2)")
    p.add_argument("--split", action="store_true", help="also run auth only and audit only, to see which costs")
    p.add_argument("--consent-deny", action="store_true",
                   help="also run on with a Consent deny rule that applies to the caller (the full-event audit path)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--db", default=None, help="database (default bench_fhir_1m; quick bench_fhir_quick)")
    p.add_argument("--reuse", action="store_true", help="reuse the read_search database if it holds this data set")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--load-mode", choices=["repository", "http"], default="repository")
    p.add_argument("--load-procs", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log", type=Path, default=Path("/tmp/bench_auth_audit_server.log"))
    args = p.parse_args(argv)
    args.resources = args.resources or (20_000 if args.quick else 1_000_000)
    args.reads = args.reads or (500 if args.quick else 2_000)
    args.searches = args.searches or (200 if args.quick else 1_000)
    args.db = args.db or ("bench_fhir_quick" if args.quick else "bench_fhir_1m")
    args.keep = args.keep or args.reuse
    return args


def dev_token(url: str, port: int) -> str:
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_AUTH_DEV_ISSUER": "1",
           "FHIR_BASE_URL": f"http://127.0.0.1:{port}/fhir"}
    out = subprocess.run(harness.cli("dev-token", "--client", "bench-mash", "--scope", "user/*.rs",
                                     "--practitioner", "bench-1", "--purpose", "CAREMGT",
                                     "--agency", "la:201", "--role", "mash-practitioner"),
                         env=env, check=True, capture_output=True, text=True, cwd=harness.REPO_ROOT)
    return out.stdout.strip().splitlines()[-1]


def audit_count(conn: psycopg.Connection) -> int:
    """AuditEvents recorded: in the trail, and (reads and searches on PostgreSQL, audit/pending.py)
    written compactly by the read's own statement and not yet expanded by the sealer."""
    pending = conn.execute("SELECT to_regclass('audit_pending') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    query = "SELECT (SELECT count(*) FROM audit_event)" + (" + (SELECT count(*) FROM audit_pending)" if pending else "")
    return int(conn.execute(query).fetchone()[0])  # type: ignore[index]


def consent_deny(url: str, present: bool) -> None:
    """Store (or delete) an active Consent denying purpose CAREMGT — the benchmark caller's — for a
    Patient the benchmark never reads: every request then has one Consent deny rule, so its read or
    search takes the full-event audit path (recorder.AuditRecorder.prepare: no compact row in the
    statement; the AuditEvent is built and INSERTed after the answer) and its SQL the rule's test."""
    from fhir_server import build_services
    from fhir_server.config import Settings
    from fhir_server.repository.context import RequestContext

    services = build_services(Settings(database_url=url))
    ctx = RequestContext.system(services.settings.base_url)
    with services.repo.unit_of_work() as uow:
        if present:
            uow.update(ctx, "Consent", "bench-deny", {
                "resourceType": "Consent", "id": "bench-deny", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": "Patient/bench-never-read"},
                "provision": {"type": "permit", "provision": [{"type": "deny", "purpose": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "CAREMGT"}]}]}})
        else:
            uow.delete(ctx, "Consent", "bench-deny")
    services.engine.dispose()


WARM_READS, WARM_SEARCHES = 100, 30  # requests of each run not timed (imports, pools, caches)


def time_paths(port: int, paths: list[str], headers: dict[str, str]) -> list[float]:
    return harness.time_http(port, paths, headers)[0]


def run(args: argparse.Namespace, url: str, on: bool, token: str, reads: list[str],
        searches: list[str], *, auth: bool | None = None, audit: bool | None = None,
        policy: bool = True) -> tuple[list[float], list[float]]:
    auth = on if auth is None else auth
    audit = on if audit is None else audit
    os.environ.update(FHIR_AUTH_ENABLED="1" if auth else "0", FHIR_AUDIT_ENABLED="1" if audit else "0",
                      FHIR_AUTH_DEV_ISSUER="1" if auth else "0", FHIR_ACCESS_POLICY_ENABLED="1" if policy else "0")
    headers = {"Authorization": f"Bearer {token}"} if auth else {}
    with harness.running_server(url, port=args.port, workers=args.workers, log=args.log):
        time_paths(args.port, reads[:WARM_READS] + searches[:WARM_SEARCHES], headers)  # warm-up
        return time_paths(args.port, reads, headers), time_paths(args.port, searches, headers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {harness.machine_summary()}", flush=True)
    url, how = ready_dataset(args)
    print(how, flush=True)
    try:
        ids, pairs = sample(url, args.seed, args.reads, args.searches)
        reads = [f"/fhir/{t}/{i}" for t, i in ids]
        searches = [search_path(s, c) for s, c in pairs]
        token = dev_token(url, args.port)
        with psycopg.connect(url) as conn:
            audit_before = audit_count(conn)
        figures: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
        no_policy: tuple[list[float], list[float]] = ([], [])
        split: dict[str, tuple[list[float], list[float]]] = {}
        for n in range(args.rounds):
            for on in (False, True):
                r, s = run(args, url, on, token, reads, searches)
                figures[on][0].extend(r)
                figures[on][1].extend(s)
                print(f"round {n + 1}: auth+audit {'on ' if on else 'off'} done", flush=True)
            r, s = run(args, url, True, token, reads, searches, policy=False)
            no_policy[0].extend(r)
            no_policy[1].extend(s)
            print(f"round {n + 1}: auth+audit on without the access policy done", flush=True)
            if args.consent_deny:
                consent_deny(url, True)
                try:
                    r, s = run(args, url, True, token, reads, searches)
                finally:
                    consent_deny(url, False)
                split.setdefault("on, a Consent deny rule", ([], []))
                split["on, a Consent deny rule"][0].extend(r)
                split["on, a Consent deny rule"][1].extend(s)
                print(f"round {n + 1}: auth+audit on with a Consent deny rule done", flush=True)
            if args.split:
                for name, auth, audit in (("auth only", True, False), ("audit only", False, True)):
                    r, s = run(args, url, True, token, reads, searches, auth=auth, audit=audit)
                    split.setdefault(name, ([], []))
                    split[name][0].extend(r)
                    split[name][1].extend(s)
        with psycopg.connect(url) as conn:
            audited = audit_count(conn) - audit_before
            n_res = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
        base_read, _ = time_sql(url, PK_SELECT, [(i,) for _t, i in ids])
        base_search, _ = time_sql(url, OBS_SELECT, [(s, "http://loinc.org", c) for s, c in pairs])
        per_run = len(reads) + len(searches) + min(WARM_READS, len(reads)) + min(WARM_SEARCHES, len(searches))
        expected = args.rounds * 2 * per_run
        rows = []
        for label, k, base in (("read by id", 0, base_read), ("search", 1, base_search)):
            off, on = harness.latency_summary(figures[False][k]), harness.latency_summary(figures[True][k])
            bare = harness.latency_summary(no_policy[k])
            b = harness.latency_summary(base)
            verdict = "met" if on["p50"] <= TARGET * off["p50"] else f"MISSED (p50 ratio <= {TARGET})"
            rows += [[f"{label}: auth+audit off", off["p50"], off["p95"], off["p99"], ""],
                     [f"{label}: auth+audit on", on["p50"], on["p95"], on["p99"], ""],
                     [f"{label}: ratio on / off", harness.ratio(on["p50"], off["p50"]),
                      harness.ratio(on["p95"], off["p95"]), harness.ratio(on["p99"], off["p99"]), verdict],
                     [f"{label}: on, no access policy", bare["p50"], bare["p95"], bare["p99"], ""],
                     [f"{label}: ratio on / on without policy", harness.ratio(on["p50"], bare["p50"]),
                      harness.ratio(on["p95"], bare["p95"]), harness.ratio(on["p99"], bare["p99"]), ""],
                     [f"{label}: raw SELECT (psycopg)", b["p50"], b["p95"], b["p99"], ""],
                     [f"{label}: ratio on / raw SELECT", harness.ratio(on["p50"], b["p50"]),
                      harness.ratio(on["p95"], b["p95"]), harness.ratio(on["p99"], b["p99"]), ""]]
        harness.print_table(
            f"Auth + audit overhead on {n_res:,} resources ({args.workers} workers, 1 sequential client, "
            f"{args.rounds} rounds of {len(reads):,} reads and {len(searches):,} searches each way)",
            ["what", "p50 ms", "p95 ms", "p99 ms", "target"], rows)
        if split:
            harness.print_table("Where the overhead goes (same rounds)", ["what", "p50 ms", "p95 ms", "p99 ms"], [
                [f"{label}: {name}", *(harness.latency_summary(times[k])[p] for p in ("p50", "p95", "p99"))]
                for name, times in split.items() for label, k in (("read", 0), ("search", 1))])
            expected += args.rounds * per_run * (int(args.split) + int(args.consent_deny))  # audit-only, deny runs
        print(f"AuditEvents written while on: {audited:,} (expected {expected:,}: one per request)")
    finally:
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep, hint=" (rerun with --reuse to skip loading)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
