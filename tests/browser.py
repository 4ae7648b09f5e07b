"""Helpers for the dashboard's browser tests: Debian's Chromium under selenium, a gunicorn of
our own settings, and the API calls that build a fleet."""
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import ROOT, gunicorn, tool_or_skip  # noqa: F401 (gunicorn: for the tests)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "tests" / "screenshots"  # git-ignored; the README's two images are copied from here
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WAIT = 30  # seconds: generous, a refresh is every 5 s


def chrome(profile):
    """Headless Chromium with an explicit chromedriver path, so selenium-manager is never run and
    nothing is downloaded; every host but loopback resolves to nothing."""
    driver_path = tool_or_skip("chromedriver", "apt-get install chromium chromium-driver")
    if not Path(CHROMIUM).exists():
        tool_or_skip("chromium", "apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def shoot(driver, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def requested_urls(driver):
    """Every URL the page asked for, from Chromium's network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_for(driver, condition, timeout=WAIT):
    """Poll the DOM until `condition(driver)` is truthy; returns its value."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def card_text(driver, client_id):
    """A card's visible text, read in one step inside the page (a refresh may replace it meanwhile)."""
    return driver.execute_script(
        "const card = document.querySelector(`li.card[data-client-id='${arguments[0]}']`);"
        "return card ? card.innerText : ''", client_id)


def call(base, path, body=None, key=None):
    """(status, data or message) of one API call."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with OPENER.open(req, timeout=15) as resp:
            envelope = json.loads(resp.read())
            return resp.status, envelope["data"]
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())["message"]


def ok(result):
    status, data = result
    assert status == 200, data
    return data


def register(base, user, name, status="online", key=None):
    client_id = uuid.uuid4().hex
    ok(call(base, "/api/user/insert_client", {"user_id": user, "client_id": client_id, "client_status": status,
                                             "name": name, "os_type": "Linux"}, key=key))
    return client_id


def heartbeat(base, client_id, temps, usage=50, timestamp=None, key=None):
    """Post one report with a GPU per temperature in `temps`."""
    return ok(call(base, "/api/client/heartbeat", report(client_id, temps, usage, timestamp), key=key))


def report(client_id, temps, usage=50, timestamp=None):
    """A report with a GPU per temperature in `temps`."""
    body = {"client_id": client_id, "system": {"cpu_usage": 40, "memory_usage": 55, "disk_usage": 30,
                                                 "network_rx": 2048, "network_tx": 1024},
              "device_memsize": 24576, "total_tflops": 80,
              "devices": [{"index": i, "name": "NVIDIA GeForce RTX 4090", "temp": t, "usage": usage,
                           "mem_usage": 60, "power_usage": 300 + i} for i, t in enumerate(temps)]}
    if timestamp:
        body["timestamp"] = timestamp
    return body


