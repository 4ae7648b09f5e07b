"""python -m bench: build the dataset, start gunicorn, find the live fleet's capacity, measure figures 1-7."""
import argparse
import os
import platform
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg2
import redis

from gpufs import config
from gpufs.devenv import ensure_database

from . import dataset, load, phases
from .report import HEAD, Results

BENCH_DB = "gpufs_bench"
LOCK_KEY = 7_354_260_800  # any constant: "a benchmark is running in this database"


QUICK = {"seconds": 1, "rounds": 1, "cached_rounds": 1, "warmup": 1, "ingest_seconds": 3, "history": 2,
         "copy_reports": 1000, "fleet_window": 15, "fleet_warmup": 3, "fleet_resolution": 0.5, "fleet_steps": 3,
         "cpu_window": 8, "budget": 300}
FIGURES = ("live", "dashboard", "1", "2", "3", "4", "5", "6", "7", "fleet")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench", description=(
            "gpuf-s performance benchmark. Headline: the live fleet's capacity (machines reporting every 60 s "
            "while 20 dashboards poll). Uses the PostgreSQL server of DATABASE_URL but only its own database "
            f"{BENCH_DB!r} (created if missing, emptied each run), and the Redis server of REDIS_URL with its "
            "own db number. Needs Debian's wrk. Prints each figure as it is measured, then the table, and "
            "writes a JSON file."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short windows and a coarse search, to try the benchmark out (figures not comparable): "
                        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    p.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT") or 0) or None,
                   help="loopback port of the servers under test (default: BENCH_PORT, else a free one)")
    p.add_argument("--figures", default="live,dashboard,1,4,5,6,7,fleet",
                   help="what to measure: live (the fleet), dashboard (bench/dashboard.py in headless Chromium, "
                        "when present), figures 1-7 (2 and 3 are information only) and fleet (figure M: "
                        "one /metrics/fleet scrape of 1,000 machines)")
    g = p.add_argument_group("the live fleet")
    g.add_argument("--fleet", type=int, default=None, help="one step at this many machines instead of the search")
    g.add_argument("--fleet-start", type=int, default=None,
                   help="first size of the search (default: 30 x figure 6's single-report rate, else 2000)")
    g.add_argument("--fleet-window", type=int, default=60, help="measured seconds per step")
    g.add_argument("--fleet-warmup", type=int, default=5, help="seconds of load before each step's window")
    g.add_argument("--fleet-resolution", type=float, default=0.2,
                   help="stop bisecting when the smallest failing size is within this share of the largest passing")
    g.add_argument("--fleet-steps", type=int, default=6, help="at most this many steps in the search")
    g.add_argument("--budget", type=int, default=570,
                   help="seconds for the whole run: the search starts no step the figures after it would not "
                        "have time for")
    g.add_argument("--cpu-window", type=int, default=10,
                   help="measured seconds of the fleet alone at capacity (CPU per report)")
    g = p.add_argument_group("figures 1-7")
    g.add_argument("--scale", type=float, default=1.0, help="multiply the number of clients (100 + 5000 background)")
    g.add_argument("--seconds", type=int, default=2, help="measured interval of each wrk run (whole seconds)")
    g.add_argument("--rounds", type=int, default=3, help="measured runs per figure, taken in turn across its paths")
    g.add_argument("--cached-rounds", type=int, default=5, help="rounds of figure 2")
    g.add_argument("--warmup", type=int, default=2, help="warm-up before each wrk run, discarded")
    g.add_argument("--connections", type=int, default=8, help="wrk connections for the throughput figures")
    g.add_argument("--ingest-seconds", type=int, default=10, help="measured interval of each ingestion run")
    g.add_argument("--batch", type=int, default=500, help="reports per POST /api/client/heartbeats")
    g.add_argument("--history", type=int, default=10, help="raw-heartbeat history factor of figure 4")
    g.add_argument("--copy-reports", type=int, default=5000, help="reports whose rows one COPY run writes")
    p.add_argument("--database", default=BENCH_DB,
                   help="the benchmark's own database (emptied each run); another name keeps two code trees, "
                        "whose migrations differ, from sharing one")
    p.add_argument("--redis-db", type=int, default=9, help="Redis db number the benchmark's servers use")
    p.add_argument("--output", type=Path, default=Path(__file__).with_name("results.json"))
    args = p.parse_args(argv)
    if args.quick:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
    args.figures = {x.strip() for x in args.figures.split(",") if x.strip()}
    if not args.figures or not args.figures <= set(FIGURES):
        p.error("--figures: comma-separated, from " + ",".join(FIGURES))
    args.figures = {int(x) if x.isdigit() else x for x in args.figures}
    if args.scale <= 0 or min(args.seconds, args.rounds, args.cached_rounds, args.connections,
                              args.ingest_seconds, args.fleet_window, args.fleet_steps, args.cpu_window) < 1 \
            or args.warmup < 0 or args.fleet_warmup < 0 or args.history < 2 or not 1 <= args.batch <= 1000 \
            or args.fleet_resolution <= 0 or (args.fleet is not None and args.fleet < 100) or args.budget < 60:
        p.error("--scale and --fleet-resolution must be > 0; --fleet >= 100; --budget >= 60; --seconds, --rounds, "
                "--cached-rounds, --connections, --ingest-seconds, --fleet-window, --fleet-steps, --cpu-window >= 1; "
                "--history >= 2; --batch 1-1000")
    return args


def with_db(url, db):
    """`url` pointing at Redis db number `db` (redis://host:port/N or unix://path?db=N)."""
    if url.startswith("unix:"):  # rebuilt by hand: urlunsplit would drop the empty host of unix:///path
        path, _, query = url.partition("?")
        params = [(k, v) for k, v in parse_qsl(query) if k != "db"] + [("db", str(db))]
        return f"{path}?{urlencode(params)}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    load.require_wrk()
    settings = config.from_env()
    if not settings["REDIS_URL"]:
        raise SystemExit("bench: REDIS_URL is empty; the cached figures need a Redis server")
    began = time.monotonic()
    say = _printer(began)
    dsn = bench_database(settings["DATABASE_URL"], args.database)
    lock = _exclusive(dsn, say)
    try:
        _run(args, argv, dsn, settings, began, say)
    finally:
        lock.close()


def _run(args, argv, dsn, settings, began, say):
    redis_url = with_db(settings["REDIS_URL"], args.redis_db)
    workdir = tempfile.mkdtemp(prefix="gpufs-bench-")
    results = Results(show=lambda line: say("   " + line))
    layout = dataset.Layout(run=secrets.token_hex(3), scale=args.scale)
    results.meta.update(_machine(dsn, redis_url), command="python -m bench " + shlex.join(argv or sys.argv[1:]),
                        connections=args.connections, warmup=args.warmup, seconds=args.seconds, rounds=args.rounds,
                        cached_rounds=args.cached_rounds, fleet_window=args.fleet_window,
                        fleet_warmup=args.fleet_warmup, scale=args.scale,
                        load_before=_load())
    say(f"dataset in {args.database} (logs in {workdir})")
    counts, secs = dataset.build(dsn, layout, say=lambda text: say(text))
    results.meta["dataset"] = {"rows": counts, "build_seconds": round(secs, 1)}
    say(f"  built in {secs:.0f} s: {counts['heartbeat']:,} heartbeats, {counts['gpu_assets']:,} clients")
    bench = phases.Bench(args, dsn, redis_url, layout, workdir, results, say, began)
    say(f"one table line per figure as it is measured:\n{HEAD}")
    if args.figures & {"live", "dashboard", 1, 2, 6}:
        phases.cached(bench)
    if 7 in args.figures:
        phases.streaming(bench)
    if "fleet" in args.figures:
        phases.fleet_scrape(bench)
    if args.figures & {3, 4, 5}:
        if args.figures & {"live", 6, 7}:
            # The fleet and figure 6 wrote millions of rows: the base of figure 4 gets the same settled
            # database as the run after extend_history(), not an autovacuum in the middle of it.
            say("settling the database after ingestion (vacuum analyze, checkpoint)")
            dataset.settle(dsn)
        phases.uncached(bench)
    results.meta.update(load_after=_load(), total_seconds=round(time.monotonic() - began))
    print()
    print(results.header())
    print()
    print(results.table())
    results.write(args.output)
    say(f"written to {args.output}")


def bench_database(url, name=BENCH_DB):
    """Database `name` (gpufs_bench) on the server of `url`, created if missing; its DSN. The database
    `url` names need not exist (the README's example names one that may not): CREATE DATABASE runs
    from the server's maintenance database `postgres`, else from the one `url` names."""
    params = psycopg2.extensions.parse_dsn(url)
    last = None
    for maintenance in ("postgres", params.get("dbname"), "template1"):
        if not maintenance:
            continue
        try:
            return ensure_database(psycopg2.extensions.make_dsn(**{**params, "dbname": maintenance}), name)
        except psycopg2.OperationalError as err:
            last = err
    raise SystemExit(f"bench: cannot create or open {name} on the server of DATABASE_URL: {last}")


def _exclusive(dsn, say):
    """Hold a session advisory lock in gpufs_bench for the whole run: a second benchmark against the same
    server would empty the tables under this one (it did: answers turned 404, rows went missing)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("select pg_try_advisory_lock(%(key)s)", {"key": LOCK_KEY})
        if not cur.fetchone()[0]:
            say(f"another benchmark is using {conn.info.dbname} on this server; waiting for it to finish")
            cur.execute("select pg_advisory_lock(%(key)s)", {"key": LOCK_KEY})
    return conn


def _printer(began):
    def say(text):
        print(f"[{time.monotonic() - began:5.0f}s] {text}", flush=True)
    return say


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _machine(dsn, redis_url):
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select current_setting('server_version')")
            postgres = "PostgreSQL " + cur.fetchone()[0]
    finally:
        conn.close()
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "postgres": postgres,
            "redis": redis.Redis.from_url(redis_url).info("server")["redis_version"],
            # deploy/gunicorn.conf.py's defaults, unless the environment overrides them as in production
            "workers": int(os.environ.get("GUNICORN_WORKERS", "2")),
            "threads": int(os.environ.get("GUNICORN_THREADS", "4"))}


if __name__ == "__main__":
    main()
