"""The published curl workflow, verbatim, against the real gunicorn process."""
import json
import urllib.error
import urllib.request

CID = "6e1131b4b9cc454aa6ce3294ab860b2d"


def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, payload = resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        status, payload = err.code, json.loads(err.read())
    assert set(payload) == {"success", "data", "message", "timestamp"}
    return status, payload


def run_seed_workflow(base):
    """Steps 1-7 of the published 'Complete Client Management Workflow'."""
    status, body = call(base, "/api/user/insert_client", {
        "user_id": "12", "client_id": CID, "client_status": "online", "os_type": "Linux", "name": "GPU Server 1"})
    assert (status, body["success"], body["data"]) == (200, True, [])

    status, body = call(base, "/api/user/client_list?user_id=12")
    assert status == 200 and body["data"]["total"] == 1
    device = body["data"]["devices"][0]
    assert device["client_id"] == CID and device["client_name"] == "GPU Server 1"
    assert {"client_status", "os_type", "device_name", "tflops", "cpu_usage", "memory_usage", "storage_usage",
            "health", "last_online", "created_at", "uptime_days"} <= set(device)

    status, body = call(base, f"/api/user/client_device_detail?user_id=12&client_id={CID}")
    assert status == 200 and set(body["data"]) == {"system_info", "device_info"}
    assert set(body["data"]["system_info"]) == {"health", "cpu_usage", "memory_usage", "storage_usage",
                                                "device_memsize", "uptime_days"}

    status, body = call(base, "/api/user/edit_client_info", {
        "user_id": "12", "client_id": CID, "name": "Updated GPU Server 1", "client_status": "maintenance"})
    assert (status, body["data"]) == (200, None)

    status, body = call(base, "/api/user/client_stat?user_id=12")
    assert status == 200
    assert body["data"]["systems_total_number"] == 1 and body["data"]["systems_maintenance_number"] == 1
    assert set(body["data"]) == {"systems_total_number", "systems_online_number", "systems_maintenance_number",
                                 "systems_warnings_number", "total_tflops", "uptime_rate"}

    status, body = call(base, "/api/user/client_monitor?user_id=12")
    assert status == 200 and body["data"][0]["client_name"] == "Updated GPU Server 1"

    status, body = call(base, "/api/user/client_health?user_id=12")
    assert status == 200 and isinstance(body["data"], list)

    status, body = call(base, "/api/user/client_list?user_id=12")
    assert body["data"]["devices"][0]["client_status"] == "maintenance"


def test_seed_curl_workflow_against_gunicorn(db, server):
    run_seed_workflow(server)
