"""The load generator: Debian's wrk on loopback, a fixed number of connections, a warm-up, then a
measured interval. Each run reports its own CPU time, so it can be shown not to be the bottleneck."""
import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = Path(__file__).with_name("lua")
GPUS = 8


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # socket errors and timeouts
    non_2xx: int
    wrk_cpu: float  # share of one core the load generator used
    server_cpu_ms: float = float("nan")  # CPU time of the server's workers per request

    @property
    def rate(self):
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ms_per_request(self):
        return 1000 * self.seconds / self.requests if self.requests else float("inf")

    def as_dict(self):
        return {**asdict(self), "rate": round(self.rate, 1)}


def total_rate(runs):
    return sum(r.requests for r in runs) / sum(r.seconds for r in runs)


def best_p50(runs):
    """The lowest median latency of the runs: interference from other work only ever adds latency."""
    return min(r.p50_ms for r in runs)


def best_ms(runs):
    """The lowest time per request (1 / throughput) of the runs."""
    return min(r.ms_per_request for r in runs)


def server_cpu_ms(runs):
    """Server worker CPU per request over all the runs."""
    return sum(r.server_cpu_ms * r.requests for r in runs) / max(1, sum(r.requests for r in runs))


def median_ratio(runs, base_runs):
    """The median over rounds of run rate ÷ the same round's base rate."""
    ratios = sorted(r.rate / b.rate for r, b in zip(runs, base_runs, strict=True) if b.rate)
    return ratios[len(ratios) // 2] if ratios else None


def median_bracketed_ratio(runs, before, after):
    """The median over rounds of run rate ÷ the mean rate of the base runs just before and after it."""
    ratios = sorted(2 * r.rate / (b.rate + a.rate) for r, b, a in zip(runs, before, after, strict=True)
                    if b.rate + a.rate)
    return ratios[len(ratios) // 2] if ratios else None


def require_wrk():
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk not found; install Debian's load generator: sudo apt-get install -y wrk")


class Wrk:
    """Runs wrk against one base URL; `warmup` and `seconds` apply to every measurement."""

    def __init__(self, base, warmup, seconds, workdir, server_cpu=None):
        self.base, self.warmup, self.seconds = base, warmup, seconds
        self.server_cpu = server_cpu  # callable: the server workers' CPU seconds so far
        self.workdir = Path(workdir)
        self.summary = (LUA / "summary.lua").read_text()

    def measure(self, path, connections, threads=1, prelude="", script="", args=None, seconds=None):
        """A warm-up run (discarded), then one measured run; `args` is (warm-up's, measured run's) script argument."""
        lua = self._script(prelude + script + self.summary)
        if self.warmup:
            self._run(path, connections, threads, lua, self.warmup, args[0] if args else None)
        return self._run(path, connections, threads, lua, seconds or self.seconds, args[1] if args else None)

    def rounds(self, paths, connections, rounds):
        """Warm every path up, then `rounds` rounds of one measured run per path in turn, so that a change
        in the machine's load (other work on shared cores) falls on all paths alike. {path: [Run]}."""
        runs = self.sequence([path for _ in range(rounds) for path in paths], connections)
        return {path: runs[i::len(paths)] for i, path in enumerate(paths)}

    def sequence(self, paths, connections):
        """Warm each distinct path up, then one measured run per entry of `paths`, in order: [Run]."""
        self.warm(paths, connections)
        return self.runs(paths, connections)

    def warm(self, paths, connections):
        """A discarded run of each distinct path."""
        if self.warmup:
            lua = self._script(self.summary)
            for path in dict.fromkeys(paths):
                self._run(path, connections, 1, lua, self.warmup, None)

    def runs(self, paths, connections, after_each=None):
        """One measured run per entry of `paths`, in order, no warm-up: [Run]. `after_each(i, run)` is
        called after each, for what must be measured in the same moment as that run."""
        lua = self._script(self.summary)
        done = []
        for i, path in enumerate(paths):
            done.append(self._run(path, connections, 1, lua, self.seconds, None))
            if after_each is not None:
                after_each(i, done[-1])
        return done

    def _script(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=self.workdir, delete=False) as f:
            f.write(text)
        return f.name

    def _run(self, path, connections, threads, lua, seconds, arg):
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "-s", lua,
               self.base + path]
        if arg is not None:
            cmd += ["--", str(arg)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = self.server_cpu() if self.server_cpu else None
        began = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        wall = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = self.server_cpu() - server_before if self.server_cpu else float("nan")
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{out}")
        r = json.loads(line.split(" ", 1)[1])
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Run(requests=r["requests"], seconds=r["duration_us"] / 1e6, p50_ms=r["p50_us"] / 1000,
                   p90_ms=r["p90_us"] / 1000, p99_ms=r["p99_us"] / 1000, mean_ms=r["mean_us"] / 1000,
                   errors=r["connect"] + r["read"] + r["write"] + r["timeout"], non_2xx=r["status"],
                   wrk_cpu=cpu / wall, server_cpu_ms=1000 * server / max(1, r["requests"]))


def reports_prelude(client_sets, batch, interval):
    """Lua globals for reports.lua: each wrk thread's client ids, the batch size and 8 GPUs."""
    devices = ",".join(
        f'{{"index":{i},"name":"NVIDIA H100 80GB HBM3","temp":{55 + i},"usage":{70 + i},'
        f'"mem_usage":{60 + i},"power_usage":{450 + 10 * i}}}' for i in range(GPUS))
    clients = ",\n".join("{" + ",".join(f'"{c}"' for c in ids) + "}" for ids in client_sets)
    return (f"CLIENTS = {{\n{clients}\n}}\nBATCH = {batch}\nINTERVAL = {interval}\n"
            f"DEVICES = '[{devices}]'\n")


def reports_script():
    return (LUA / "reports.lua").read_text()
