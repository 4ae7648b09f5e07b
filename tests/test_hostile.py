"""Hostile input: SQL metacharacters and Unicode are data, never code; malformed bodies are 4xx."""
import pytest

from .conftest import assert_envelope, new_client_id

NASTY = [
    "'; drop table gpu_assets; --",
    "Robert'); delete from client_models;--",
    "%s %(user_id)s :name $1 {0}",
    "\\'\\\\\"",
    "名前 🚀 Ünïcödé",
    "a\u202eb\u200dc",
    "  leading and trailing  ",
]


@pytest.mark.parametrize("text", NASTY)
def test_nasty_strings_are_stored_and_returned_verbatim(client, text):
    user = text[:32]
    cid = new_client_id()
    assert_envelope(client.post("/api/user/insert_client", json={
        "user_id": user, "client_id": cid, "client_status": "online", "os_type": text[:64], "name": text[:32]}), 200)
    data = assert_envelope(client.get("/api/user/client_list", query_string={"user_id": user}), 200)["data"]
    assert data["total"] == 1
    assert data["devices"][0]["client_name"] == text[:32]
    assert data["devices"][0]["os_type"] == text[:64]
    found = assert_envelope(client.get("/api/user/client_list",
                                       query_string={"user_id": user, "name": text[:32]}), 200)["data"]
    assert found["total"] == 1
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": user, "client_id": cid, "name": text[::-1][:32]}), 200)
    monitor = assert_envelope(client.get("/api/user/client_monitor", query_string={"user_id": user}), 200)["data"]
    assert monitor[0]["client_name"] == text[::-1][:32]

    assert_envelope(client.post("/api/models/insert", json={
        "name": text, "version": text[:50], "version_code": 1, "engine_type": 0}), 200)
    models = assert_envelope(client.get("/api/models/get"), 200)["data"]
    assert [(m["name"], m["version"]) for m in models] == [(text, text[:50])]


def test_tables_survive_the_nasty_strings(client, db):
    for text in NASTY:
        client.post("/api/user/insert_client", json={"user_id": "u", "client_id": new_client_id(),
                                                      "client_status": "online", "name": text[:32]})
    with db.cursor() as cur:
        cur.execute("select count(*) from gpu_assets")
        assert cur.fetchone()[0] == len(NASTY)


@pytest.mark.parametrize("field", ["user_id", "name", "os_type"])
def test_nul_character_is_400_not_a_database_error(client, field):
    body = {"user_id": "1", "client_id": new_client_id(), "client_status": "online", "name": "n", "os_type": "o"}
    body[field] = "a\x00b"
    message = assert_envelope(client.post("/api/user/insert_client", json=body), 400)["message"]
    assert message.startswith(field + ":")


def test_nul_in_query_string_is_400(client):
    assert_envelope(client.get("/api/user/client_list?user_id=a%00b"), 400)
    assert_envelope(client.get("/api/user/client_list?user_id=1&name=%00"), 400)


def test_deeply_nested_body_is_400(client):
    body = b'{"user_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_envelope(client.post("/api/user/insert_client", data=body, content_type="application/json"), 400)


def test_invalid_utf8_body_is_400(client):
    body = b'{"user_id": "\xff\xfe", "name": "x"}'
    assert_envelope(client.post("/api/user/insert_client", data=body, content_type="application/json"), 400)


@pytest.mark.parametrize("value", [2**70, -2**70, 1e300])
def test_out_of_range_numbers_are_400(client, value):
    body = {"name": "m", "version": "1", "version_code": value, "engine_type": 0}
    message = assert_envelope(client.post("/api/models/insert", json=body), 400)["message"]
    assert message.startswith("version_code:")


def test_huge_query_values_are_400(client):
    assert_envelope(client.get("/api/models/get?min_gpu_memory_gb=" + "9" * 40), 400)
    assert_envelope(client.get("/api/user/client_health?user_id=1&limit=10001"), 400)
    assert_envelope(client.get("/api/user/client_health?user_id=1&limit=0"), 400)
    assert_envelope(client.get("/api/user/client_list?user_id=1&name=" + "n" * 256), 400)


@pytest.mark.parametrize("text", NASTY)
def test_nasty_gpu_names_are_stored_verbatim(client, text):
    cid = new_client_id()
    client.post("/api/user/insert_client", json={"user_id": "1", "client_id": cid, "client_status": "online",
                                                  "name": "n"})
    report = {"client_id": cid, "system": {"cpu_usage": 1, "memory_usage": 1, "disk_usage": 1, "network_rx": 0,
                                           "network_tx": 0},
              "devices": [{"index": 0, "name": text, "temp": 50, "usage": 1, "mem_usage": 1, "power_usage": 1}]}
    assert_envelope(client.post("/api/client/heartbeat", json=report), 200)
    detail = assert_envelope(client.get("/api/user/client_device_detail",
                                        query_string={"user_id": "1", "client_id": cid}), 200)["data"]
    assert detail["device_info"][0]["name"] == text
