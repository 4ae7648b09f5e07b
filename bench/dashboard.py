"""python -m bench.dashboard --base URL [--user U]: the dashboard's weight and speed in headless Chromium.

Measures, against a running server: the board's transfer on first load and per refresh for the
user's fleet (100 clients when it makes one), the first render of a 1,000-client board, and the
drawing of a client page with 8 GPUs' 24 h charts once their data has arrived. Without --user it
makes the fleets itself through the API (fresh user ids, nothing else touched).
"""
import argparse
import gzip
import json
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TARGETS = {"first_load_kb": 300, "refresh_kb": 30, "board_1000_ms": 1000, "charts_ms": 500}


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with OPENER.open(req, timeout=120) as resp:
        return json.loads(resp.read())["data"]


def report_for(client_id, gpus, at=None):
    body = {"client_id": client_id, "system": {"cpu_usage": 35, "memory_usage": 50, "disk_usage": 40,
                                               "network_rx": 4096, "network_tx": 2048},
            "device_memsize": 24576 * gpus, "total_tflops": 80 * gpus,
            "devices": [{"index": i, "name": "NVIDIA H100 80GB HBM3", "usage": 40 + i * 5, "mem_usage": 55,
                         "temp": 60 + (i * 7 + int(at[14:16] if at else 0)) % 30, "power_usage": 300 + i * 10}
                        for i in range(gpus)]}
    if at:
        body["timestamp"] = at
    return body


def make_fleet(base, user, clients, gpus=2):
    ids = [uuid.uuid4().hex for _ in range(clients)]
    for n, client_id in enumerate(ids):
        post(base, "/api/user/insert_client", {"user_id": user, "client_id": client_id, "client_status": "online",
                                                "name": f"gpu-node-{n:04d}", "os_type": "Linux"})
    for start in range(0, clients, 500):
        post(base, "/api/client/heartbeats", {"reports": [report_for(c, gpus) for c in ids[start:start + 500]]})
    return ids


def make_history(base, client_id, gpus=8, hours=24, every=120):
    """A day of reports every 2 minutes, backfilled through the batch endpoint."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    times = [(now - timedelta(seconds=s)).isoformat().replace("+00:00", "Z") for s in range(hours * 3600, 0, -every)]
    for start in range(0, len(times), 250):
        reports = [report_for(client_id, gpus, t) for t in times[start:start + 250]]
        post(base, "/api/client/heartbeats", {"reports": reports})


def browser(driver_path):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='gpufs-bench-')}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def transfers(driver):
    """(bytes on the wire, what gzip would make of the bodies plus the same headers, requests) since the last call."""
    sent, urls = {}, {}
    for entry in driver.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"] == "Network.requestWillBeSent" and m["params"]["request"]["url"].startswith("http"):
            urls[m["params"]["requestId"]] = m["params"]["request"]["url"]
        elif m["method"] == "Network.loadingFinished":
            sent[m["params"]["requestId"]] = m["params"]["encodedDataLength"]
    wire = gz = 0
    for rid, url in urls.items():
        wire += sent.get(rid, 0)
        with OPENER.open(url, timeout=60) as resp:  # the same URL again, for its body's size gzipped
            body = resp.read()
        gz += sent.get(rid, 0) - len(body) + len(gzip.compress(body, 6))
    return wire, gz, len(urls)


def mark(driver, name, timeout=120):
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script("return performance.getEntriesByName(arguments[0]).length", name))
    return driver.execute_script("return performance.getEntriesByName(arguments[0])[0].startTime", name)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:18081")
    p.add_argument("--user", help="a user whose fleet to load (default: make a 100-client fleet)")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args(argv)
    base = args.base.rstrip("/")
    token = uuid.uuid4().hex[:8]
    user = args.user or f"bd{token}-100"
    if not args.user:
        print("making a 100-client fleet …", flush=True)
        ids = make_fleet(base, user, 100)
    else:
        ids = None
    big = f"bd{token}-1k"
    print("making a 1,000-client fleet and a client with 8 GPUs and 24 h of history …", flush=True)
    make_fleet(base, big, 1000)
    gpu_client = make_fleet(base, f"bd{token}-8", 1, gpus=8)[0]
    make_history(base, gpu_client)

    driver = browser(args.chromedriver)
    figures = {}
    try:
        driver.get(f"{base}/dashboard/?user_id={user}")
        mark(driver, "gpufs:board-gpus-painted")
        wire, gz, n = transfers(driver)
        figures["first_load_kb"] = (wire / 1024, gz / 1024, n)
        # One refresh with the traffic of a live fleet: a client reports every 120 s, so about
        # 5/120 of them have a new report at each 5 s refresh, and their GPUs are read again.
        if ids:
            post(base, "/api/client/heartbeats", {"reports": [report_for(c, 2) for c in ids[:5]]})
        driver.execute_script("window.__refreshes = performance.getEntriesByType('resource')"
                              ".filter(e => e.name.includes('client_status_list')).length")
        WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: d.execute_script(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes('client_status_list'))"
            ".length > window.__refreshes"))
        time.sleep(1.5)  # the refresh's detail reads, which follow the list
        wire, gz, n = transfers(driver)
        figures["refresh_kb"] = (wire / 1024, gz / 1024, n)

        driver.get(f"{base}/dashboard/?user_id={big}")
        rendered = mark(driver, "gpufs:board-rendered-painted")
        # When the board's three reads had answered: what is left is our script and the paint.
        answered = driver.execute_script(
            "return Math.max(...performance.getEntriesByType('resource')"
            ".filter(e => /client_status_list|client_stat|client_list/.test(e.name)).slice(0, 3)"
            ".map(e => e.responseEnd))")
        gpus = mark(driver, "gpufs:board-gpus-painted", timeout=300)
        figures["board_1000_ms"] = (rendered, answered, gpus)

        driver.get(f"{base}/dashboard/client?client_id={gpu_client}&user_id=bd{token}-8")
        try:
            drawn = mark(driver, "gpufs:history-drawn-painted", timeout=60)
            arrived = driver.execute_script("return performance.getEntriesByName('gpufs:history-data')[0].startTime")
            charts = driver.execute_script("return document.querySelectorAll('figure.gpu-chart').length")
            figures["charts_ms"] = (drawn - arrived, charts)
        except TimeoutException:  # a server without device_history draws no chart
            figures["charts_ms"] = None
    finally:
        driver.quit()

    wire, gz, n = figures["first_load_kb"]
    print("| figure | measured | target |\n|---|---|---|")
    print(f"| board, 100 clients, first load ({n} requests) | {wire:.1f} KB as sent (uncompressed), "
          f"{gz:.1f} KB gzip'd | ≤ {TARGETS['first_load_kb']} KB compressed |")
    wire, gz, n = figures["refresh_kb"]
    print(f"| board, 100 clients, one refresh ({n} requests, 5 new reports) | {wire:.1f} KB as sent, "
          f"{gz:.1f} KB gzip'd | ≤ {TARGETS['refresh_kb']} KB |")
    rendered, answered, gpus = figures["board_1000_ms"]
    print(f"| board, 1,000 clients, first render (all cards painted) | {rendered:.0f} ms from navigation "
          f"(reads answered at {answered:.0f} ms, then {rendered - answered:.0f} ms to build and paint); "
          f"every card's GPUs read and painted: {gpus:.0f} ms | ≤ {TARGETS['board_1000_ms']} ms |")
    if figures["charts_ms"] is None:
        print(f"| client page, 8 GPUs' 24 h charts | not measured: no charts drawn (device_history missing?) | "
              f"≤ {TARGETS['charts_ms']} ms |")
    else:
        drawn, charts = figures["charts_ms"]
        print(f"| client page, {charts} GPUs' 24 h charts, data arrived → painted | {drawn:.0f} ms | "
              f"≤ {TARGETS['charts_ms']} ms |")


if __name__ == "__main__":
    main()
