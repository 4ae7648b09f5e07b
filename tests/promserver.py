"""A real Prometheus for tests: Debian's binary on loopback, a temp config and storage, stopped on exit;
and a gunicorn server of the test's own settings for it to scrape."""
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from .conftest import ROOT, free_port, gunicorn, tool_or_skip  # noqa: F401 (gunicorn: for the tests)

INSTALL = "apt-get install prometheus"


AUTHORIZATION = """\
    # authorization:
    #   type: Bearer
    #   credentials_file: /etc/prometheus/gpufs.key
"""


def deploy_config(target, scrape_interval="1s", key_file=None):
    """deploy/prometheus.yml as shipped, pointed at `target` (host:port) and scraping every
    `scrape_interval`, its token-mode `authorization` un-commented to read `key_file` if given:
    the tests run the configuration the README tells operators to use."""
    text = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert text.count('"127.0.0.1:18081"') == 2 and text.count("15s") == 2 and AUTHORIZATION in text
    if key_file:
        text = text.replace(AUTHORIZATION, AUTHORIZATION.replace("# ", "").replace(
            "/etc/prometheus/gpufs.key", json.dumps(str(key_file))))
    return text.replace('"127.0.0.1:18081"', json.dumps(target)).replace("15s", scrape_interval)


@contextmanager
def prometheus(config_text, tmp_path):
    """Start Prometheus with `config_text`; yields a Prometheus (query helpers), stops it after."""
    binary = tool_or_skip("prometheus", INSTALL)
    home = Path(tmp_path)
    home.mkdir(parents=True, exist_ok=True)
    (home / "prometheus.yml").write_text(config_text)
    port = free_port()
    log = home / "prometheus.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            cwd=home, stdout=subprocess.DEVNULL, stderr=err)
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        server.wait_ready()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Prometheus:
    def __init__(self, base, proc, log):
        self.base, self.proc, self.log = base, proc, log

    def wait_ready(self, seconds=60):
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start:\n" + self.log.read_text())
            time.sleep(0.2)

    def api(self, path, **params):
        """The query API's answer as (status, data, error); a PromQL error is an answer, not an exception."""
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        return body["status"], body.get("data"), body.get("error")

    def query(self, expr):
        """An instant query's result list; fails the test on a PromQL error."""
        status, data, error = self.api("query", query=expr)
        assert status == "success", f"{expr}: {error}"
        return data["result"]

    def poll(self, expr, until, seconds=60):
        """Query `expr` until `until(result)` holds or the deadline passes; returns the last result."""
        deadline = time.monotonic() + seconds
        while True:
            result = self.query(expr)
            if until(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.25)

    def targets_up(self, seconds=60):
        """Wait until every configured target was scraped successfully; returns their jobs."""
        deadline = time.monotonic() + seconds
        while True:
            status, data, _ = self.api("targets")
            active = data["activeTargets"] if status == "success" else []
            if active and all(t["health"] == "up" for t in active):
                return {t["labels"]["job"] for t in active}
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up: {[(t['scrapeUrl'], t['lastError']) for t in active]}")
            time.sleep(0.25)
