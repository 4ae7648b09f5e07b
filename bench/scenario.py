"""The live fleet: N machines report every 60 s while 20 dashboards of one user poll; the search for
the largest N whose every request meets its latency target (capacity)."""
import hashlib
import math
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from gpufs.fleet import Machine

from . import dataset
from .live import Generator, Stream, raw_request

PERIOD = 60.0  # seconds between one machine's reports (the agent's default)
USERS = 50  # the main user (the dashboards', 100 machines) and 49 others sharing the rest
DASHBOARDS = 20
GPUS = 8
POLL_P99_MS = 100.0
REPORT_P99_MS = 250.0
TARGET_MACHINES = 30_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPORTS = "report"
# (kind, period in seconds, senders): the dashboards' polls as the web page makes them; one Prometheus.
POLLS = (("client_status_list", 5, DASHBOARDS), ("client_stat", 5, DASHBOARDS),
         ("client_device_detail", 10, DASHBOARDS), ("device_history", 30, DASHBOARDS),
         ("metrics/fleet", 15, 1))
OPTIONAL = ("device_history", "metrics/fleet")  # polled only when the server has them
DASHBOARD_POLLS = ("client_status_list", "client_stat", "client_device_detail", "device_history")


class Fleet:
    """The machines: the main user's 100 (the dataset's, with their week of history) and
    `count - 100` more over 49 users, registered as the fleet grows. Each sends the simulator's
    reports (gpufs.fleet.Machine), with 8 GPUs and no outages: every machine reports every period."""

    def __init__(self, dsn, layout, main_clients):
        self.dsn, self.layout, self.main_clients = dsn, layout, main_clients
        self.prefix = f"{layout.run}-fl-"
        self.registered = 0
        self.machines = []
        self.rng = random.Random(17)
        self.start = layout.start.timestamp()

    def main_ids(self):
        return [hashlib.md5(f"{self.layout.main}:{n}".encode()).hexdigest() for n in range(1, self.main_clients + 1)]

    def grow(self, count):
        """Register machines up to `count` in all (one set-based insert) and build their simulators."""
        others = max(0, count - self.main_clients)
        if others > self.registered:
            conn = dataset.connect(self.dsn)
            try:
                dataset.queries.register_fleet(conn, prefix=self.prefix, users=USERS - 1, count=others,
                                               created_at=datetime.now(timezone.utc) - timedelta(minutes=1))
            finally:
                conn.close()
            self.registered = others
        main = self.main_ids()
        while len(self.machines) < count:
            k = len(self.machines)
            client_id = main[k] if k < len(main) else \
                hashlib.md5(f"{self.prefix}:{k - len(main) + 1}".encode()).hexdigest()
            m = Machine(self.rng, "bench", k, self.start, self.start)
            per_gpu_mem, per_gpu_tflops = m.memsize // m.gpus, m.tflops / m.gpus
            m.gpus, m.gaps, m.stops_at = GPUS, [], math.inf
            m.memsize, m.tflops = GPUS * per_gpu_mem, GPUS * per_gpu_tflops
            m.client_hex = client_id
            self.machines.append(m)

    def spread(self, count):
        """Senders 0..count-1 mapped to machines, the main user's spread evenly among the others: its
        dashboards then see a report every period / 100 seconds, as a real fleet's would."""
        main = min(self.main_clients, count)
        slots = {math.floor(k * count / main): k for k in range(main)}
        others = iter(range(main, count))
        self.order = [slots[i] if i in slots else next(others) for i in range(count)]

    def report(self, i, wall):
        m = self.machines[self.order[i]]
        r = m.report(self.rng, wall, (wall - self.start) / 86400, PERIOD)
        r["client_id"] = m.client_hex
        r["timestamp"] = r["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return raw_request("POST", "/api/client/heartbeat", orjson.dumps(r))

    def stored_since(self, since):
        conn = dataset.connect(self.dsn)
        try:
            return dataset.queries.count_reports_since(conn, users=f"{self.layout.run}-%", since=since)
        finally:
            conn.close()


@dataclass
class Seen:
    """What the dashboards saw: the age of the newest report each client_status_list showed."""

    freshness: list = field(default_factory=list)

    def __call__(self, body, wall, outcome):
        devices = orjson.loads(body)["data"]["devices"]  # read in the warm-up too: a 200 must be readable
        if not outcome.in_window:
            return
        newest = max((d["last_online"] for d in devices if d.get("last_online")), default=None)
        if newest:
            seen = datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp()
            self.freshness.append(wall - seen)


def poll_paths(main, client_ids):
    n = len(client_ids)
    return {
        "client_status_list": lambda i: f"/api/user/client_status_list?user_id={main}",
        "client_stat": lambda i: f"/api/user/client_stat?user_id={main}",
        "client_device_detail":
            lambda i: f"/api/user/client_device_detail?user_id={main}&client_id={client_ids[i % n]}",
        # Its default range is the last 24 hours: the page's 24 h chart.
        "device_history":
            lambda i: f"/api/user/device_history?user_id={main}&client_id={client_ids[(i * 7) % n]}",
        "metrics/fleet": lambda i: f"/metrics/fleet?user_id={main}",
    }


def percentile(values, p):
    """The nearest-rank percentile (no interpolation: p99 of 40 values is the largest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Result:
    """One step of the search, summarised; `passed` and `reasons` say how it stands against the criteria."""

    machines: int
    window: float
    aborted: str
    kinds: dict  # kind: {count, p50_ms, p99_ms, errors, scheduled}
    polls_p99_ms: float
    answered: int
    stored: int
    lateness_ms: dict
    sent_share: float
    cpu: dict  # seconds over the window: server, postgres, generator
    hit_ratio: float | None
    group_mean: float | None  # single reports per transaction (group commit), from /metrics
    freshness_p99_s: float
    errors: list
    passed: bool = False
    reasons: list = field(default_factory=list)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Scenario:
    """Runs steps against one server; `cpu` is a callable giving (server, postgres) CPU seconds so far."""

    def __init__(self, b, srv, cpu, metrics):
        self.b, self.srv, self.cpu, self.metrics = b, srv, cpu, metrics
        self.fleet = Fleet(b.dsn, b.layout, b.layout.main_clients)
        self.present = self._probe()
        self.results = {}
        self.steps = 0

    def _probe(self):
        """The optional polls the server answers: a 404 means it has no such route."""
        ids = self.fleet.main_ids()
        paths = poll_paths(self.b.layout.main, ids)
        present = []
        for kind in OPTIONAL:
            status = self.srv.status(paths[kind](0))
            if status == 200:
                present.append(kind)
            elif status == 404:
                self.b.say(f"   {kind}: the server has no such route (404); its poll is skipped")
            else:
                # Polled, every step would fail on it: skipped, and said where the figures are read.
                self.b.say(f"   {kind}: answered {status} to the probe; its poll is skipped")
                self.b.results.problem(f"live fleet: {kind} answered {status} to the probe, so it was not polled")
        return present

    def streams(self, machines, dashboards=True):
        ids = self.fleet.main_ids()
        paths = poll_paths(self.b.layout.main, ids)
        seen = Seen()
        streams = [Stream(REPORTS, machines, PERIOD, self.fleet.report)] if machines else []
        if dashboards:
            for kind, period, senders in POLLS:
                if kind in OPTIONAL and kind not in self.present:
                    continue
                streams.append(Stream(kind, senders, period,
                                      lambda i, _wall, path=paths[kind]: raw_request("GET", path(i)),
                                      seen if kind == "client_status_list" else None))
        return streams, seen

    def step(self, machines, warmup, window, dashboards=True, stop_early=True, record=True):
        self.fleet.grow(machines)
        self.fleet.spread(machines)
        streams, seen = self.streams(machines, dashboards)
        expected = {s.kind: s.rate * window for s in streams}
        expected_polls = sum(v for k, v in expected.items() if k in DASHBOARD_POLLS)
        slow = {"report": 0, "poll": 0}

        def verdict(o, step):
            if o.status != 200 or o.error:
                return f"{o.kind}: {o.error or f'answered {o.status}'}"
            if o.in_window:
                group = "report" if o.kind == REPORTS else "poll" if o.kind in DASHBOARD_POLLS else None
                limit = REPORT_P99_MS if group == "report" else POLL_P99_MS
                if group and 1000 * o.latency >= limit:
                    slow[group] += 1
                    # More than 1% of the window's requests already over the limit: its p99 cannot be met.
                    if slow[group] > 0.01 * (expected[REPORTS] if group == "report" else expected_polls):
                        return f"{group}s: over 1% of the window's already took ≥ {limit:.0f} ms"
            return None

        since = datetime.now(timezone.utc)
        before = self.metrics()
        step = Generator("127.0.0.1", self.srv.port).run(
            streams, warmup, window, verdict if stop_early else None, marks=self.cpu)
        after = self.metrics()
        answered = sum(1 for o in step.outcomes if o.kind == REPORTS and o.status == 200)
        stored = self.fleet.stored_since(since) if machines else 0
        result = summarise(machines, step, answered, stored, before, after, seen)
        if record:
            self.results[machines] = result
            self.steps += 1
        return result

    def search(self, start, resolution, max_steps, warmup, window, say, time_left=None):
        def passes(n):
            r = self.step(n, warmup, window)
            say("   " + describe(r))
            return r.passed

        def may_go_on():
            # A step that passes takes its whole warm-up and window, and the count after it.
            if time_left is None or time_left() >= warmup + window + 15:
                return True
            say("   no time left for another step within the run's budget (--budget)")
            return False
        return search(passes, start, resolution, max_steps, self.fleet.main_clients, may_go_on)


def search(passes, start, resolution, max_steps, smallest, may_go_on=lambda: True):
    """(largest size that passed, smallest that failed): doubling from `start` until a step fails (halving
    while none has passed), then bisecting between the two until the failed one is within `resolution`
    of the passed one, `max_steps` steps ran, or `may_go_on()` says no before a step after the first.
    Sizes are rounded by _nice; none below `smallest`."""
    passed, failed, n = None, None, start
    for step in range(max_steps):
        if step and not may_go_on():
            break
        if passes(n):
            passed = n
        else:
            failed = n
        if passed is None:
            n = _nice(n / 2)
            if n < smallest or n == failed:
                break
        elif failed is None:
            n = _nice(2 * n)
        else:
            if failed <= passed * (1 + resolution):
                break
            n = _nice((passed + failed) / 2)
            if n in (passed, failed):
                break
    return passed, failed


def _nice(n):
    """Round a fleet size to two significant figures (at least 100 machines, the main user's)."""
    n = max(100, int(n))
    step = 10 ** max(0, len(str(n)) - 2)
    return max(100, round(n / step) * step)


def summarise(machines, step, answered, stored, before, after, seen):
    window = [o for o in step.outcomes if o.in_window]
    kinds = {}
    for kind in dict.fromkeys(o.kind for o in step.outcomes):
        mine = [o for o in window if o.kind == kind]
        ok = [1000 * o.latency for o in mine if o.status == 200 and not o.error]
        kinds[kind] = {"count": len(mine), "scheduled": step.scheduled.get(kind, 0),
                       "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99),
                       "max_ms": max(ok, default=float("nan")),
                       "errors": sum(1 for o in mine if o.status != 200 or o.error)}
    polls = [1000 * o.latency for o in window if o.kind in DASHBOARD_POLLS and o.status == 200
             and not o.error]
    late = [1000 * o.lateness for o in window]
    scheduled = sum(step.scheduled.values())
    errors = sorted({f"{o.kind}: {o.error or o.status}" for o in step.outcomes if o.status != 200 or o.error})
    (srv0, pg0), (srv1, pg1) = step.at_window.get("start", (0, 0)), step.at_window.get("end", (0, 0))
    hits = after.get("gpufs_cache_hits_total", 0) - before.get("gpufs_cache_hits_total", 0)
    misses = after.get("gpufs_cache_misses_total", 0) - before.get("gpufs_cache_misses_total", 0)
    groups = after.get("gpufs_report_group_size_count", 0) - before.get("gpufs_report_group_size_count", 0)
    grouped = after.get("gpufs_report_group_size_sum", 0) - before.get("gpufs_report_group_size_sum", 0)
    r = Result(machines=machines, window=round(step.window, 1), aborted=step.aborted, kinds=kinds,
               polls_p99_ms=percentile(polls, 99), answered=answered, stored=stored,
               lateness_ms={"p50": percentile(late, 50), "p99": percentile(late, 99), "max": max(late, default=0)},
               sent_share=len(window) / scheduled if scheduled else 1.0,
               cpu={"server": srv1 - srv0, "postgres": pg1 - pg0, "generator": step.cpu_seconds},
               hit_ratio=hits / (hits + misses) if hits + misses else None,
               group_mean=grouped / groups if groups else None,
               freshness_p99_s=percentile(seen.freshness, 99), errors=errors[:10])
    if step.aborted:
        r.reasons.append(f"stopped after {step.window:.0f} s: {step.aborted}")
    if errors:
        r.reasons.append(f"{len(errors)} kinds of error, e.g. {errors[0]}")
    if REPORTS in kinds and not kinds[REPORTS]["p99_ms"] < REPORT_P99_MS:
        r.reasons.append(f"reports p99 {kinds[REPORTS]['p99_ms']:.0f} ms")
    if polls and not r.polls_p99_ms < POLL_P99_MS:
        r.reasons.append(f"polls p99 {r.polls_p99_ms:.0f} ms")
    if stored < answered:
        r.reasons.append(f"{answered} reports answered 200, {stored} stored")
    r.passed = not r.reasons
    return r


def describe(r):
    rep = r.kinds.get(REPORTS, {})
    return (f"{r.machines:,} machines ({r.machines / PERIOD:.0f} reports/s): reports p50/p99 "
            f"{rep.get('p50_ms', float('nan')):.0f}/{rep.get('p99_ms', float('nan')):.0f} ms, polls p99 "
            f"{r.polls_p99_ms:.0f} ms, sent {100 * r.sent_share:.1f}% of those due (late p99 "
            f"{r.lateness_ms['p99']:.1f} ms), stored {r.stored:,}/{r.answered:,} answered, hit ratio "
            + (f"{r.hit_ratio:.2f}" if r.hit_ratio is not None else "-")
            + (f", {r.group_mean:.2f} reports per write" if r.group_mean is not None else "")
            + (" → ok" if r.passed else " → fails: " + "; ".join(r.reasons)))


def postgres_cpu(database):
    """CPU seconds (user + system) so far of the PostgreSQL backends connected to `database`, found by
    their process titles ("postgres: 15/main: user database host(port) state")."""
    total = 0.0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes()
            if b" " + database.encode() + b" " not in title or not title.startswith(b"postgres:"):
                continue
            fields = cmdline.with_name("stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


