"""The server under test, started as in production: gunicorn -c deploy/gunicorn.conf.py, on a loopback port
(a free one unless --port / BENCH_PORT names one)."""
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.app:app"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the product app plus the bench-only Redis floor route


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn master and its workers; `env` overrides the inherited environment (None removes a key)."""

    def __init__(self, name, env, log_dir, port=None):
        self.name = name
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        merged = {**os.environ, **env, "GPUFS_BIND": f"127.0.0.1:{self.port}"}
        self.env = {key: value for key, value in merged.items() if value is not None}
        self.log = Path(log_dir) / f"gunicorn-{name}.log"
        self.proc = None

    def __enter__(self):
        gunicorn = Path(sys.executable).with_name("gunicorn")
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([str(gunicorn), "-c", "deploy/gunicorn.conf.py", APP], cwd=ROOT,
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        self._wait_ready()
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _wait_ready(self, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.name}) exited; see {self.log}")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as resp:
                    if resp.status == 200 and len(self.workers()) >= self.expected_workers():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn ({self.name}) not ready after {seconds} s; see {self.log}")

    def expected_workers(self):
        return int(self.env.get("GUNICORN_WORKERS", "2"))  # deploy/gunicorn.conf.py's default

    def workers(self):
        """Pids of the master's worker processes."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended while we looked
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def cpu_seconds(self):
        """CPU time (user + system) the workers have used so far."""
        total = 0.0
        for pid in self.workers():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def get(self, path, timeout=60):
        with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
            return resp.read()

    def status(self, path, timeout=60):
        """The HTTP status of a GET, error statuses included."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code


def peak_rss_kb(pid):
    """VmHWM: the process's peak resident memory so far, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")
