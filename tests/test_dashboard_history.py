"""The client page's per-GPU charts in headless Chromium, drawn from device_history."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.common.by import By

from .browser import call, chrome, console_errors, heartbeat, ok, register, report, shoot, wait_for
from .test_dashboard import off_origin


@pytest.fixture
def driver(tmp_path, request):
    browser = chrome(tmp_path / "profile")
    yield browser
    shoot(browser, request.node.name)
    browser.quit()


@pytest.fixture
def user():
    return "hist" + uuid.uuid4().hex[:12]


def test_client_page_draws_one_chart_per_gpu_with_the_posted_values(driver, server, user):
    client_id = register(server, user, "eta")
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def at(minutes):
        return (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    # Six hours every 5 minutes, cooler than what follows; then silence; then three reports
    # 5 minutes apart whose figures the charts must show.
    background = [report(client_id, [50 + m % 7, 70 + m % 9], usage=20 + m % 40, timestamp=at(m))
                  for m in range(360, 60, -5)]
    assert ok(call(server, "/api/client/heartbeats", {"reports": background}))["stored"] == 60
    temps = {0: [61, 74, 68], 1: [80, 93, 90]}  # per GPU, oldest first
    for n, minutes in enumerate((14, 9, 4)):
        heartbeat(server, client_id, [temps[0][n], temps[1][n]], usage=20 + n * 30, timestamp=at(minutes))
    driver.set_window_size(1280, 1500)
    driver.get(f"{server}/dashboard/client?client_id={client_id}&user_id={user}")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.gpu-chart")) == 2)
    figures = driver.find_elements(By.CSS_SELECTOR, "figure.gpu-chart")
    for index, figure in enumerate(figures):
        assert figure.get_attribute("data-device-index") == str(index)
        charts = figure.find_elements(By.CSS_SELECTOR, "svg.chart")
        labels = [c.get_attribute("aria-label").split(":")[0] for c in charts]
        assert labels == ["Temperature", "Usage", "Memory", "Power"]
        temp, usage, memory, power = charts
        assert (temp.get_attribute("data-count"), temp.get_attribute("data-latest"), temp.get_attribute("data-peak")) \
            == ("63", str(temps[index][-1]), str(max(temps[index])))
        assert (usage.get_attribute("data-latest"), usage.get_attribute("data-peak")) == ("80", "80")
        assert memory.get_attribute("data-latest") == "60" and power.get_attribute("data-latest") == str(300 + index)
        assert f"peak {max(temps[index])} °C" in figure.find_element(By.TAG_NAME, "figcaption").text
        # 24 h are drawn in 5-minute buckets: one line through the 60, a gap, one line through the 3.
        path = temp.find_element(By.CSS_SELECTOR, "path.line").get_attribute("d")
        assert (path.count("M"), path.count("L")) == (2, 59 + 2)
    shoot(driver, "dashboard-client")
    driver.find_element(By.CSS_SELECTOR, "button[data-hours='1']").click()
    wait_for(driver, lambda d: "one point per 2 min" in d.find_element(By.ID, "history-summary").text)
    temps_1h = [f.find_element(By.CSS_SELECTOR, "svg.chart")
                for f in driver.find_elements(By.CSS_SELECTOR, "figure.gpu-chart")]
    assert [c.get_attribute("data-count") for c in temps_1h] == ["3", "3"]
    # In 2-minute buckets the reports are 5 minutes apart: a gap between each, never a line across it.
    assert "L" not in temps_1h[0].find_element(By.CSS_SELECTOR, "path.line").get_attribute("d")
    assert len(temps_1h[0].find_elements(By.CSS_SELECTOR, "circle.dot")) == 3
    assert off_origin(driver, server) == []
    assert console_errors(driver) == []


def test_client_page_draws_a_chosen_range(driver, server, user):
    client_id = register(server, user, "theta")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for minutes, temp in ((180, 40), (20, 71), (10, 72)):
        at = (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        heartbeat(server, client_id, [temp], timestamp=at)
    driver.get(f"{server}/dashboard/client?client_id={client_id}&user_id={user}")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "figure.gpu-chart svg.chart[data-count='3']"))
    # The last 40 minutes, typed as a person would into the two local-time inputs.
    driver.execute_script("""
        const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16);
        document.getElementById('range-start').value = local(Date.now() - 40 * 60000);
        document.getElementById('range-end').value = local(Date.now() + 60000);""")
    driver.find_element(By.CSS_SELECTOR, "#range button[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "figure.gpu-chart svg.chart[data-count='2']"))
    temp = driver.find_element(By.CSS_SELECTOR, "figure.gpu-chart svg.chart")
    assert (temp.get_attribute("data-latest"), temp.get_attribute("data-peak")) == ("72", "72")
    assert [b.get_attribute("aria-pressed") for b in driver.find_elements(By.CSS_SELECTOR, "button[data-hours]")] \
        == ["false", "false", "false"]
