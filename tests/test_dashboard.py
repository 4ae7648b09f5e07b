"""The dashboard in a real headless Chromium against the real gunicorn: what a team sees of a fleet
made through the API, and that the page stays safe (text only, same origin, no console error)."""
import time
import uuid
from urllib.parse import urlsplit

import psycopg2
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from .browser import (
    call,
    card_text,
    chrome,
    console_errors,
    heartbeat,
    register,
    requested_urls,
    shoot,
    wait_for,
)

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def driver(tmp_path, request):
    browser = chrome(tmp_path / "profile")
    yield browser
    shoot(browser, request.node.name)
    browser.quit()


@pytest.fixture
def user():
    return "dash" + uuid.uuid4().hex[:12]


@pytest.fixture
def fleet(server, user, urls):
    """A hot client, one registered active that never reported, one silent for 7 minutes, one in
    maintenance: every kind of warning the board must explain."""
    hot = register(server, user, "alpha-hot")
    heartbeat(server, hot, [70, 91])
    never = register(server, user, "beta-never", status="active")
    quiet = register(server, user, "delta-quiet", status="online")
    heartbeat(server, quiet, [55])
    maint = register(server, user, "gamma-maint", status="maintenance")
    heartbeat(server, maint, [60])
    # Silence needs time to pass; the server judges it by its own receive time, so move that back.
    with psycopg2.connect(urls["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("update system_info set last_seen_at = now() - interval '7 minutes 10 seconds'"
                    " where client_id = %(id)s", {"id": bytes.fromhex(quiet)})
    conn.close()
    return {"hot": hot, "never": never, "quiet": quiet, "maint": maint}


def board(driver, server, user, cards):
    driver.get(f"{server}/dashboard/?user_id={user}")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fleet > li")) == cards)


def off_origin(driver, base):
    origin = urlsplit(base)[:2]
    return [u for u in requested_urls(driver)
            if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u)[:2] != origin]


def test_board_lists_a_fleet_made_through_the_api_and_says_why_one_needs_a_look(driver, server, user, fleet):
    board(driver, server, user, 4)
    wait_for(driver, lambda d: "GPU 1 hot: 91 °C" in card_text(d, fleet["hot"]))
    hot = card_text(driver, fleet["hot"])
    assert "online" in hot and "GPU 0 NVIDIA GeForce RTX 4090: 70 °C, 50% used" in hot
    never = card_text(driver, fleet["never"])
    assert "offline" in never and "last seen never" in never and "silent: no heartbeat since it was registered" in never
    quiet = driver.find_element(By.CSS_SELECTOR, f'li.card[data-client-id="{fleet["quiet"]}"]')
    assert "status-offline" in quiet.get_attribute("class").split()  # grey, never a healthy green
    assert "last seen 7 min ago" in quiet.text and "silent: no heartbeat for 7 min" in quiet.text
    assert "(last report)" in quiet.text  # its old figures are labelled as old
    maint = card_text(driver, fleet["maint"])
    assert "maintenance" in maint and "⚠" not in maint
    stat = {dd.get_attribute("data-stat"): dd.text for dd in driver.find_elements(By.CSS_SELECTOR, "[data-stat]")}
    assert stat["systems_total_number"] == "4" and stat["systems_maintenance_number"] == "1"
    assert stat["systems_warnings_number"] == "3"  # hot, never reported, silent
    wait_for(driver, lambda d: d.find_element(By.ID, "fleet-summary").text == "4 clients shown, 3 need a look.")
    seen = driver.find_element(By.CSS_SELECTOR, f'li.card[data-client-id="{fleet["quiet"]}"] time')
    assert seen.get_attribute("title").endswith(" UTC")  # the UTC time on hover
    shoot(driver, "dashboard-board")


def test_heartbeat_posted_through_the_api_appears_within_one_refresh(driver, server, user, fleet):
    board(driver, server, user, 4)
    wait_for(driver, lambda d: "70 °C" in card_text(d, fleet["hot"]))
    heartbeat(server, fleet["hot"], [77, 64], usage=33)
    wait_for(driver, lambda d: "GPU 0 NVIDIA GeForce RTX 4090: 77 °C, 33% used" in card_text(d, fleet["hot"]))
    assert "⚠" not in card_text(driver, fleet["hot"])  # the warning went with the heat
    heartbeat(server, fleet["never"], [50])
    wait_for(driver, lambda d: "online" in card_text(d, fleet["never"]) and "⚠" not in card_text(d, fleet["never"]))


def test_filters_narrow_the_board_by_live_status_and_name(driver, server, user, fleet):
    board(driver, server, user, 4)

    def shown(d):
        return sorted(d.execute_script("return [...document.querySelectorAll('#fleet > li')]"
                                       ".map(li => li.dataset.clientId)"))

    Select(driver.find_element(By.ID, "filter-status")).select_by_value("offline")
    wait_for(driver, lambda d: shown(d) == sorted([fleet["never"], fleet["quiet"]]))
    Select(driver.find_element(By.ID, "filter-status")).select_by_value("")
    driver.find_element(By.ID, "filter-name").send_keys("MAINT")
    wait_for(driver, lambda d: shown(d) == [fleet["maint"]])
    assert driver.find_element(By.ID, "fleet-summary").text == "1 client shown, 0 need a look."
    Select(driver.find_element(By.ID, "filter-status")).select_by_value("online")
    wait_for(driver, lambda d: d.find_element(By.ID, "fleet-summary").text == "No clients match.")


def test_a_name_with_markup_stays_text(driver, server, user):
    client_id = register(server, user, XSS)
    heartbeat(server, client_id, [40])
    board(driver, server, user, 1)
    link = driver.find_element(By.CSS_SELECTOR, f'li.card[data-client-id="{client_id}"] h2 a')
    assert link.text == XSS
    assert driver.find_elements(By.CSS_SELECTOR, "#fleet img") == []
    driver.get(f"{server}/dashboard/client?client_id={client_id}&user_id={user}")
    wait_for(driver, lambda d: d.find_element(By.ID, "client-name").text == XSS)
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (reading it is what raises when no alert opened)


def test_board_and_catalogue_stay_on_their_origin_and_log_no_error(driver, server, user, fleet):
    board(driver, server, user, 4)
    wait_for(driver, lambda d: "GPU 1 hot" in card_text(d, fleet["hot"]))
    driver.find_element(By.LINK_TEXT, "Models").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "models-summary").text.endswith("models."))
    assert off_origin(driver, server) == []
    assert console_errors(driver) == []


def test_keyboard_reaches_the_filters_and_a_client_with_a_visible_focus(driver, server, user, fleet):
    from selenium.webdriver.common.keys import Keys
    board(driver, server, user, 4)
    body = driver.find_element(By.TAG_NAME, "body")
    reached = []
    for _ in range(12):
        body.send_keys(Keys.TAB)
        active = driver.switch_to.active_element
        reached.append(active.get_attribute("id") or active.text)
        if active.text == "alpha-hot":
            break
    assert "filter-status" in reached and "filter-name" in reached and reached[-1] == "alpha-hot"
    outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "client-name").text == "alpha-hot")


def test_board_is_readable_at_phone_width(driver, server, user, fleet):
    driver.set_window_size(390, 844)
    board(driver, server, user, 4)
    wide = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
    assert not wide  # nothing to scroll sideways
    shoot(driver, "dashboard-phone")


def test_client_page_shows_system_gpus_daily_rollups_and_recent_heartbeats(driver, server, user):
    client_id = register(server, user, "epsilon")
    heartbeat(server, client_id, [66, 88], usage=71)
    driver.get(f"{server}/dashboard/client?client_id={client_id}&user_id={user}")
    wait_for(driver, lambda d: d.find_element(By.ID, "client-name").text == "epsilon")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gpus tbody tr")) == 2)
    system = driver.find_element(By.ID, "system").text
    assert "CPU\n40%" in system and "GPU memory\n24576 MB" in system
    rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#gpus tbody tr")]
    assert rows[0] == "0 NVIDIA GeForce RTX 4090 66 °C 71% 60% 300 W"
    assert rows[1] == "1 NVIDIA GeForce RTX 4090 ⚠ 88 °C hot 71% 60% 301 W"
    wait_for(driver, lambda d: "2.0 KB" in d.find_element(By.ID, "daily").text)
    daily = driver.find_element(By.CSS_SELECTOR, "#daily tbody tr").text
    assert daily.split()[1] == "1" and "40.0%" in daily  # one counted heartbeat, its CPU figure
    beats = driver.find_elements(By.CSS_SELECTOR, "#beats tbody tr")
    assert len(beats) == 1 and "1.0 KB 2.0 KB" in beats[0].text  # sent, received
    stamp = driver.find_element(By.CSS_SELECTOR, "#beats time")
    assert stamp.get_attribute("title").endswith(" UTC") and stamp.get_attribute("datetime").endswith("Z")


def test_model_catalogue_lists_a_model_inserted_through_the_api(driver, server, user):
    name = "llama-" + uuid.uuid4().hex[:8]
    status, _ = call(server, "/api/models/insert", {"name": name, "version": "1.0", "version_code": 1,
                                                   "engine_type": 0, "min_gpu_memory_gb": 24})
    assert status == 200
    driver.get(f"{server}/dashboard/models?user_id={user}")
    wait_for(driver, lambda d: any(r.text.startswith(f"{name} 1.0 1 0 ✔ active")
                                   for r in d.find_elements(By.CSS_SELECTOR, "#models tbody tr")))
    assert console_errors(driver) == []


def test_alerts_page_says_none_yet_for_a_quiet_fleet(driver, server, user):
    register(server, user, "zeta", status="maintenance")
    driver.get(f"{server}/dashboard/alerts?user_id={user}")
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#alerts tbody").text == "none yet")
    assert not driver.find_element(By.ID, "banner").is_displayed()



HIDE = """Object.defineProperty(document, "visibilityState", {configurable: true, get: () => arguments[0]});
document.dispatchEvent(new Event("visibilitychange"));"""
POLLS = """return performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/client_status_list")).length;"""


def test_a_hidden_tab_polls_nothing_and_refreshes_when_shown_again(driver, server, user, fleet):
    board(driver, server, user, 4)
    wait_for(driver, lambda d: "70 °C" in card_text(d, fleet["hot"]))
    driver.execute_script(HIDE, "hidden")
    polls = driver.execute_script(POLLS)
    heartbeat(server, fleet["hot"], [66, 64], usage=12)
    # Longer than one refresh (5 s): a page that kept polling would have asked again by now. Only a
    # broken pause can fail this; a slow machine cannot.
    time.sleep(6)
    assert driver.execute_script(POLLS) == polls
    assert "66 °C" not in card_text(driver, fleet["hot"])
    driver.execute_script(HIDE, "visible")  # shown again: it refreshes at once, not a period later
    wait_for(driver, lambda d: "GPU 0 NVIDIA GeForce RTX 4090: 66 °C, 12% used" in card_text(d, fleet["hot"]))
    assert driver.execute_script(POLLS) > polls
