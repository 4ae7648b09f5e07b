"""Fleet simulator (days of plausible reports fed through gpufs.ingest) and raw-heartbeat retention."""
import hashlib
import math
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

from . import ingest
from .db import queries

# name, memory MB, FP32 TFLOPS, idle W, max W
GPU_MODELS = (
    ("NVIDIA GeForce RTX 4090", 24564, 82.6, 25, 450),
    ("NVIDIA GeForce RTX 3090", 24576, 35.6, 30, 350),
    ("NVIDIA A100 80GB PCIe", 81920, 19.5, 45, 300),
    ("NVIDIA H100 80GB HBM3", 81559, 66.9, 70, 700),
    ("NVIDIA L40S", 46068, 91.6, 35, 350),
)
# Per model: SM clock idle and boost (MHz), memory clock idle and busy (MHz), has fans (passively
# cooled data-centre cards report none), has ECC (GeForce cards have none). Unknown readings are null.
GPU_TRAITS = {
    "NVIDIA GeForce RTX 4090": (210, 2520, 405, 10501, True, False),
    "NVIDIA GeForce RTX 3090": (210, 1695, 405, 9751, True, False),
    "NVIDIA A100 80GB PCIe": (210, 1410, 1512, 1512, False, True),
    "NVIDIA H100 80GB HBM3": (345, 1980, 2619, 2619, False, True),
    "NVIDIA L40S": (210, 2520, 405, 9001, False, True),
}
USERS = ("alice", "bob", "chen", "dara", "emeka", "farah")
PROGRAMS = ("python3", "python3", "torchrun", "vllm", "trainer")
XIDS = (13, 31, 43, 48, 63, 79, 94)  # the XID codes a fleet most often logs
XID_CHANCE = 1 / 30_000  # per GPU and report: a handful a week in a 20-machine fleet
ECC_CHANCE = 1 / 50_000
JOB_SECONDS = 6 * 3600  # how long one job keeps a GPU: its process stays the same meanwhile
BATCH = 500
PRUNE_BATCH = 10_000
DAY = 86400.0


class SimulationError(Exception):
    """The simulation cannot start (e.g. a simulated client_id belongs to another user)."""


def _clamp(value, lo=0.0, hi=100.0):
    return round(min(hi, max(lo, value)), 1)


class Machine:
    """One simulated GPU machine: its hardware, habits and the times it is down."""

    def __init__(self, rng, user, index, start, end):
        digest = hashlib.blake2b(f"gpufs-simulate:{user}:{index}".encode(), digest_size=16).digest()
        self.client_id = digest
        self.name = f"GPU Server {index + 1}"
        self.status = "online"
        self.hot = False
        self.stops_at = end + 1
        model = rng.choice(GPU_MODELS)
        self.gpu_name, gpu_mem, gpu_tflops, self.idle_w, self.max_w = model
        self.gpus = rng.choice((1, 1, 2, 2, 4, 4, 8))
        self.memsize = gpu_mem * self.gpus
        self.tflops = gpu_tflops * self.gpus
        self.phase = rng.uniform(-2.0, 2.0)  # hours: teams start work at slightly different times
        self.intensity = rng.uniform(0.6, 1.15)
        self.disk = rng.uniform(15.0, 70.0)
        self.net_rate = rng.uniform(2e5, 3e7)  # bytes per second at full load
        self.gaps = []  # short outages: reboots, network trouble
        for _ in range(rng.randint(0, 3)):
            gap_start = rng.uniform(start, end)
            self.gaps.append((gap_start, gap_start + rng.uniform(600, 3 * 3600)))
        # The readings beyond the seed's come from a generator of the machine's own, so the base
        # figures, outages and choices of a seed stay what they were.
        self.own = random.Random(digest)
        self.gpu_mem = gpu_mem
        # Volatile uncorrected ECC errors so far, by GPU index: the benchmark's fleet gives a machine
        # more GPUs after it is built, so nothing per GPU is sized here.
        self.ecc = {}

    def up(self, t):
        return t < self.stops_at and not any(lo <= t < hi for lo, hi in self.gaps)

    def report(self, rng, t, days_in, interval_seconds):
        """A report written at epoch second `t` (loaded form, as schemas.Report gives it)."""
        hour = (t / 3600.0 + self.phase) % 24
        load = 0.45 + 0.4 * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 0.07)
        load = min(0.99, max(0.02, load * self.intensity))
        rx = int(self.net_rate * load * interval_seconds * rng.uniform(0.5, 1.5))
        devices = []
        for index in range(self.gpus):
            usage = _clamp(100 * load + rng.gauss(0, 8))
            if self.hot and index == 0:  # a failed fan: always at or above the warning threshold
                temp = _clamp(88 + 6 * load + rng.gauss(0, 1.2), 86, 150)
            else:
                temp = _clamp(32 + 0.45 * usage + rng.gauss(0, 1.2), 0, 150)
            mem_usage = _clamp(15 + 0.75 * usage + rng.gauss(0, 3))
            devices.append({
                "index": index, "name": self.gpu_name, "usage": usage, "temp": temp, "mem_usage": mem_usage,
                "power_usage": _clamp(self.idle_w + (self.max_w - self.idle_w) * usage / 100, 0, 10000),
                **self.readings(index, t, usage, temp, mem_usage),
            })
        return {
            "client_id": self.client_id,
            "timestamp": datetime.fromtimestamp(t, timezone.utc),
            "system": {"cpu_usage": _clamp(8 + 80 * load + rng.gauss(0, 4)),
                       "memory_usage": _clamp(25 + 50 * load + rng.gauss(0, 3)),
                       "disk_usage": _clamp(self.disk + 0.3 * days_in),
                       "network_rx": rx, "network_tx": int(rx * rng.uniform(0.1, 0.6))},
            "device_memsize": self.memsize,
            "total_tflops": round(self.tflops, 1),
            "devices": devices,
        }

    def gpu_uuid(self, index):
        """A GPU's UUID, stable: derived from the machine's client_id and the GPU's index."""
        return f"GPU-{uuid.UUID(bytes=hashlib.blake2b(self.client_id + bytes([index]), digest_size=16).digest())}"

    @property
    def uuids(self):
        return [self.gpu_uuid(i) for i in range(self.gpus)]

    def readings(self, index, t, usage, temp, mem_usage):
        """The optional readings of one GPU (contract section 8), as the agent sends them through NVML."""
        own = self.own
        sm_idle, sm_boost, mem_idle, mem_busy, fans, has_ecc = GPU_TRAITS[self.gpu_name]
        busy = usage >= 5
        fan = None
        if fans:  # a hot GPU's fan runs flat out and still cannot keep up
            fan = 100 if self.hot and index == 0 else int(_clamp(30 + 1.4 * (temp - 35) + own.gauss(0, 3), 30, 100))
        if has_ecc:
            self.ecc[index] = self.ecc.get(index, 0) + (own.randint(1, 2) if own.random() < ECC_CHANCE else 0)
        mem_used = round(self.gpu_mem * mem_usage / 100)
        return {
            "uuid": self.gpu_uuid(index), "fan_speed": fan,
            "sm_clock_mhz": int(sm_idle + (sm_boost - sm_idle) * min(1.0, usage / 60) * own.uniform(0.96, 1.0))
            if busy else sm_idle,
            "mem_clock_mhz": mem_busy if busy else mem_idle,
            "mem_total_mb": self.gpu_mem, "mem_used_mb": mem_used, "power_limit": float(self.max_w),
            "ecc_uncorrected": self.ecc.get(index),
            "xid": own.choice(XIDS) if own.random() < XID_CHANCE else None,
            "processes": self.processes(index, t, mem_used) if usage >= 40 else [],
        }

    def processes(self, index, t, mem_used):
        """The job on a busy GPU: the same process for its JOB_SECONDS, now and then with a helper beside it."""
        job = random.Random(f"{self.client_id.hex()}:{index}:{int(t // JOB_SECONDS)}")
        main_mb = max(0, mem_used - 600)  # the driver's own context takes some
        procs = [{"pid": job.randint(1000, 4_000_000), "name": job.choice(PROGRAMS), "user": job.choice(USERS),
                  "used_memory_mb": main_mb}]
        if job.random() < 0.3:
            helper_mb = min(main_mb, job.randint(300, 2000))
            procs[0]["used_memory_mb"] -= helper_mb
            procs.append({"pid": procs[0]["pid"] + job.randint(1, 50), "name": "python3", "user": procs[0]["user"],
                          "used_memory_mb": helper_mb})
        return procs


def fleet(rng, user, clients, start, end):
    """The machines: one registered in maintenance, a few with a hot GPU, a few that stop reporting."""
    machines = [Machine(rng, user, i, start, end) for i in range(clients)]
    others = list(range(clients))
    if clients > 1:
        machines[1].status = "maintenance"
        others.remove(1)
    for i in rng.sample(others, max(1, clients // 10)):
        machines[i].hot = True
    if clients >= 3:
        for i in rng.sample(others, max(1, clients // 12)):
            machines[i].stops_at = end - rng.uniform(1800, min(3 * DAY, (end - start) * 0.6))
    return machines


class Simulation:
    """A fleet of `clients` machines for `user` with `days` of history ending now; the same seed, the same fleet."""

    def __init__(self, settings, clients, days, user="demo", seed=1, now=None):
        self.settings = settings
        self.interval = int(settings["HEARTBEAT_INTERVAL_SECONDS"])
        self.user = user
        self.end = (now or datetime.now(timezone.utc)).timestamp()
        self.start = (math.floor((self.end - days * DAY) / self.interval) + 1) * self.interval
        self.rng = random.Random(seed)
        self.machines = fleet(self.rng, user, clients, self.start, self.end)
        self.client_ids = [m.client_id for m in self.machines]
        self.counts = {"clients": clients, "stored": 0, "duplicates": 0, "rejected": 0}

    @property
    def slots(self):
        """(machine, interval) slots of the history, for a progress bar."""
        return (int((self.end - self.start) // self.interval) + 1) * len(self.machines)

    def register(self, conn):
        """Register the machines with the same SQL as insert_client, created when their history starts."""
        with conn:
            for m in self.machines:
                row = queries.insert_client(conn, user_id=self.user, client_id=m.client_id, client_name=m.name,
                                            client_status=m.status, os_type="Linux")
                if row is None:
                    raise SimulationError(f"client_id {m.client_id.hex()} is registered to another user")
            queries.backdate_clients(conn, client_ids=self.client_ids,
                                     created_at=datetime.fromtimestamp(self.start - 60, timezone.utc))

    def history(self, conn, progress=None):
        """Feed the history through ingestion in batches; `progress(n)` gets the slots done since last call."""
        batch, slots = [], 0
        for step in range(int((self.end - self.start) // self.interval) + 1):
            bucket = self.start + step * self.interval
            for m in self.machines:
                slots += 1
                t = min(self.end, bucket + self.rng.uniform(0, self.interval / 4))
                if m.up(t):
                    batch.append(m.report(self.rng, t, (t - self.start) / DAY, self.interval))
                if len(batch) >= BATCH:
                    self._feed(conn, batch)
                    batch = []
                    if progress:
                        progress(slots)
                    slots = 0
        self._feed(conn, batch)
        if progress:
            progress(slots)
        with conn:
            queries.receive_at_report_time(conn, client_ids=self.client_ids)
        return self.counts

    def live(self, conn, rounds=None, sleep=time.sleep):
        """Keep reporting in real time, one report per machine still up every interval (`rounds` None: forever)."""
        done = 0
        while rounds is None or done < rounds:
            sleep(max(0.0, (math.floor(time.time() / self.interval) + 1) * self.interval - time.time()))
            t = time.time()
            self._feed(conn, [m.report(self.rng, t, (t - self.start) / DAY, self.interval)
                              for m in self.machines if m.up(t)])
            done += 1
        return self.counts

    def _feed(self, conn, reports):
        if reports:
            summary = ingest.summary(ingest.ingest(conn, list(enumerate(reports)), settings=self.settings))
            for key in ("stored", "duplicates", "rejected"):
                self.counts[key] += summary[key]


def simulate(conn, settings, clients, days, user="demo", seed=1, progress=None, now=None):
    """Register a simulated fleet and feed it `days` of history; returns the counts."""
    sim = Simulation(settings, clients, days, user, seed, now)
    sim.register(conn)
    return sim.history(conn, progress)


def prune(conn, older_than_days, retention_days, batch=PRUNE_BATCH, now=None):
    """Delete raw heartbeats older than `older_than_days` days, `batch` rows per transaction; rollups stay.

    Bucket claims go too, but only those no report can still need: ingestion counts
    reports up to `retention_days` old, so a claim inside that window (plus a day, the
    widest bucket) is kept even when heartbeats are pruned sooner, and a backfilled
    report still counts once.
    """
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=older_than_days)
    bucket_cutoff = min(cutoff, now - timedelta(days=retention_days)) - timedelta(days=1)
    return {"cutoff": cutoff,
            "heartbeats": _drain(conn, queries.prune_heartbeats, cutoff, batch),
            "buckets": _drain(conn, queries.prune_buckets, bucket_cutoff, batch)}


def _drain(conn, query, cutoff, batch):
    total = 0
    while True:
        with conn:
            deleted = query(conn, cutoff=cutoff, batch=batch)
        total += deleted
        if deleted < batch:
            return total
