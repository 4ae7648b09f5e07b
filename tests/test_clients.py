"""Client registry endpoints: insert_client, edit_client_info, client_list, client_status_list,
client_device_detail — fields, validation, ownership, filters and order."""
import pytest

from .conftest import assert_envelope, new_client_id, register
from .reports import UNKNOWN_READINGS

CID = "6e1131b4b9cc454aa6ce3294ab860b2d"
SEED_ITEM_FIELDS = {"client_id": str, "client_name": str, "client_status": str, "os_type": str,
                    "device_name": str, "tflops": int, "cpu_usage": int, "memory_usage": int,
                    "storage_usage": int, "health": int, "created_at": str, "uptime_days": int}


def insert(client, **overrides):
    body = {"user_id": "12", "client_id": CID, "client_status": "online", "os_type": "Linux",
            "name": "GPU Server 1"}
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not ...}
    return client.post("/api/user/insert_client", json=body)


def client_list(client, path="client_list", **params):
    params.setdefault("user_id", "12")
    body = assert_envelope(client.get(f"/api/user/{path}", query_string=params), 200)
    return body["data"]


# ---- insert_client ---------------------------------------------------------------------------

def test_insert_client_creates_a_valid_client_with_seed_fields(client):
    body = assert_envelope(insert(client), 200)
    assert body["data"] == [] and body["message"] == "Operation successful"
    data = client_list(client)
    assert data["total"] == 1
    item = data["devices"][0]
    for field, kind in SEED_ITEM_FIELDS.items():
        assert isinstance(item[field], kind), field
    assert item["client_id"] == CID
    assert item["client_name"] == "GPU Server 1"
    assert item["client_status"] == "online"
    assert item["valid_status"] == "valid"
    assert item["device_name"] == "" and item["tflops"] == 0 and item["health"] == 0
    assert item["last_online"] is None
    assert item["created_at"].endswith("Z")


def test_insert_client_upper_case_id_is_stored_lower_case(client):
    assert_envelope(insert(client, client_id=CID.upper()), 200)
    assert client_list(client)["devices"][0]["client_id"] == CID


def test_insert_client_again_updates_name_status_and_os_type(client):
    insert(client)
    assert_envelope(insert(client, name="Renamed", client_status="offline", os_type="Windows"), 200)
    item = client_list(client)["devices"][0]
    assert (item["client_name"], item["client_status"], item["os_type"]) == ("Renamed", "offline", "Windows")


def test_insert_client_without_os_type_keeps_the_stored_one(client):
    insert(client)
    insert(client, os_type=..., name="Again")
    item = client_list(client)["devices"][0]
    assert item["os_type"] == "Linux" and item["client_name"] == "Again"


def test_insert_client_of_other_user_is_409_and_changes_nothing(client):
    insert(client)
    body = assert_envelope(insert(client, user_id="13", name="Thief"), 409)
    assert "client_id" in body["message"]
    assert client_list(client)["devices"][0]["client_name"] == "GPU Server 1"
    assert client_list(client, user_id="13")["total"] == 0


@pytest.mark.parametrize("overrides, field", [
    ({"user_id": ""}, "user_id"),
    ({"user_id": "u" * 33}, "user_id"),
    ({"user_id": ...}, "user_id"),
    ({"user_id": 12}, "user_id"),
    ({"client_id": ""}, "client_id"),
    ({"client_id": CID[:-1]}, "client_id"),
    ({"client_id": CID + "0"}, "client_id"),
    ({"client_id": "g" + CID[1:]}, "client_id"),
    ({"client_id": ...}, "client_id"),
    ({"client_status": "ONLINE"}, "client_status"),
    ({"client_status": "sleeping"}, "client_status"),
    ({"client_status": ...}, "client_status"),
    ({"os_type": ""}, "os_type"),
    ({"os_type": "x" * 65}, "os_type"),
    ({"name": ""}, "name"),
    ({"name": "n" * 33}, "name"),
    ({"name": ...}, "name"),
    ({"name": ["list"]}, "name"),
])
def test_insert_client_rejects_bad_field(client, db, overrides, field):
    body = assert_envelope(insert(client, **overrides), 400)
    assert body["message"].startswith(field + ":")
    with db.cursor() as cur:
        cur.execute("select count(*) from gpu_assets")
        assert cur.fetchone()[0] == 0


def test_insert_client_accepts_the_length_bounds(client):
    assert_envelope(insert(client, user_id="u" * 32, name="n" * 32, os_type="o" * 64), 200)
    assert_envelope(insert(client, client_id=new_client_id(), user_id="u", name="n", os_type="o"), 200)


def test_insert_client_several_errors_are_joined(client):
    body = assert_envelope(insert(client, user_id="", name=""), 400)
    assert "user_id:" in body["message"] and "; " in body["message"] and "name:" in body["message"]


def test_insert_client_ignores_unknown_fields(client):
    assert_envelope(insert(client, colour="blue"), 200)


# ---- edit_client_info ----------------------------------------------------------------------

def edit(client, **fields):
    body = {"user_id": "12", "client_id": CID}
    body.update(fields)
    return client.post("/api/user/edit_client_info", json=body)


def test_edit_client_info_partial_update(client, db):
    insert(client)
    with db.cursor() as cur:
        cur.execute("update gpu_assets set updated_at = updated_at - interval '1 hour'")
    body = assert_envelope(edit(client, name="Updated Client Name", client_status="maintenance"), 200)
    assert body["data"] is None
    item = client_list(client)["devices"][0]
    assert item["client_name"] == "Updated Client Name"
    assert item["client_status"] == "maintenance"
    assert item["os_type"] == "Linux"
    monitor = assert_envelope(client.get("/api/user/client_monitor?user_id=12"), 200)["data"][0]
    assert monitor["updated_at"] > monitor["created_at"]


def test_edit_client_info_valid_status_hides_client_from_default_list(client):
    insert(client)
    assert_envelope(edit(client, valid_status="invalid"), 200)
    assert client_list(client)["total"] == 0
    invalid = client_list(client, valid_status="invalid")
    assert invalid["total"] == 1 and invalid["devices"][0]["valid_status"] == "invalid"
    detail = client.get(f"/api/user/client_device_detail?user_id=12&client_id={CID}")
    assert_envelope(detail, 200)


def test_edit_client_info_without_a_field_to_change_is_400(client):
    insert(client)
    body = assert_envelope(edit(client), 400)
    assert "at least one of" in body["message"]


def test_edit_client_info_of_other_users_client_is_404(client):
    insert(client)
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": "13", "client_id": CID, "name": "x"}), 404)
    assert_envelope(edit(client, client_id=new_client_id(), name="x"), 404)
    assert client_list(client)["devices"][0]["client_name"] == "GPU Server 1"


@pytest.mark.parametrize("fields, field", [
    ({"name": ""}, "name"),
    ({"name": "n" * 256}, "name"),
    ({"os_type": ""}, "os_type"),
    ({"os_type": "o" * 51}, "os_type"),
    ({"client_status": "Online"}, "client_status"),
    ({"valid_status": "yes"}, "valid_status"),
    ({"valid_status": True}, "valid_status"),
    ({"user_id": "u" * 256, "name": "x"}, "user_id"),
    ({"client_id": "xyz", "name": "x"}, "client_id"),
])
def test_edit_client_info_rejects_bad_field(client, fields, field):
    insert(client)
    body = assert_envelope(edit(client, **fields), 400)
    assert body["message"].startswith(field + ":")
    assert client_list(client)["devices"][0]["client_name"] == "GPU Server 1"


def test_edit_client_info_accepts_long_user_id_and_name(client):
    long_user = "u" * 255
    insert(client, user_id="u" * 32)
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": long_user, "client_id": CID, "name": "n" * 255}), 404)
    assert_envelope(edit(client, user_id="u" * 32, name="n" * 255), 200)


# ---- client_list / client_status_list filters and order --------------------------------------

@pytest.fixture
def fleet(client, db):
    """Four clients of user 12 created in a known order, one of user 13."""
    ids = []
    for n, (name, status) in enumerate([("alpha 100%", "online"), ("Beta_1", "maintenance"),
                                        ("gamma\\x", "offline"), ("delta", "error")]):
        cid = register(client, name=name, status=status)
        with db.cursor() as cur:
            cur.execute("update gpu_assets set created_at = created_at - make_interval(mins => %(m)s)"
                        " where client_id = %(cid)s", {"m": 10 - n, "cid": bytes.fromhex(cid)})
        ids.append(cid)
    register(client, user_id="13", name="alpha other")
    return ids


def test_client_list_orders_by_created_at(client, fleet):
    data = client_list(client)
    assert data["total"] == 4
    assert [d["client_id"] for d in data["devices"]] == fleet


def test_client_list_ties_on_created_at_order_by_client_id(client, db):
    ids = sorted([register(client) for _ in range(3)])
    with db.cursor() as cur:
        cur.execute("update gpu_assets set created_at = '2025-01-01 00:00:00'")
    assert [d["client_id"] for d in client_list(client)["devices"]] == ids


def test_client_list_status_filter_matches_registered_status(client, fleet):
    data = client_list(client, status="maintenance")
    assert [d["client_name"] for d in data["devices"]] == ["Beta_1"]
    assert data["total"] == 1


def test_client_list_status_filter_rejects_unknown_value(client, fleet):
    assert_envelope(client.get("/api/user/client_list?user_id=12&status=ONLINE"), 400)


@pytest.mark.parametrize("needle, expected", [
    ("ALPHA", ["alpha 100%"]),
    ("%", ["alpha 100%"]),
    ("_", ["Beta_1"]),
    ("\\", ["gamma\\x"]),
    ("a", ["alpha 100%", "Beta_1", "gamma\\x", "delta"]),
    ("zzz", []),
])
def test_client_list_name_is_literal_case_insensitive_substring(client, fleet, needle, expected):
    assert [d["client_name"] for d in client_list(client, name=needle)["devices"]] == expected


def test_client_list_client_id_filter(client, fleet):
    data = client_list(client, client_id=fleet[2].upper())
    assert [d["client_id"] for d in data["devices"]] == [fleet[2]]


def test_client_list_client_id_of_other_user_is_empty(client, fleet):
    other = register(client, user_id="13", name="theirs")
    assert client_list(client, client_id=other) == {"total": 0, "devices": []}


def test_client_list_rejects_bad_query(client):
    for query in ["", "user_id=", "user_id=" + "u" * 33, "user_id=1&client_id=zz",
                  "user_id=1&valid_status=maybe"]:
        assert_envelope(client.get("/api/user/client_list?" + query), 400)


def test_client_status_list_shows_live_status(client, db, fleet):
    with db.cursor() as cur:
        cur.execute("insert into system_info (client_id, last_seen_at) values (%(a)s, now()), (%(c)s, now())",
                    {"a": bytes.fromhex(fleet[0]), "c": bytes.fromhex(fleet[2])})
    live = {d["client_name"]: d["client_status"] for d in client_list(client, "client_status_list")["devices"]}
    assert live == {"alpha 100%": "online", "Beta_1": "maintenance", "gamma\\x": "online", "delta": "error"}
    online = client_list(client, "client_status_list", status="online")
    assert sorted(d["client_name"] for d in online["devices"]) == ["alpha 100%", "gamma\\x"]
    registered = client_list(client, status="online")
    assert [d["client_name"] for d in registered["devices"]] == ["alpha 100%"]


def test_client_status_list_client_silent_past_window_is_offline(client, db, fleet):
    with db.cursor() as cur:
        cur.execute("insert into system_info (client_id, last_seen_at) values (%(a)s, now() - interval '121 s')",
                    {"a": bytes.fromhex(fleet[0])})
    live = {d["client_name"]: d["client_status"] for d in client_list(client, "client_status_list")["devices"]}
    assert live["alpha 100%"] == "offline"


# ---- client_device_detail ------------------------------------------------------------------

def test_client_device_detail_of_new_client_has_zeros_and_no_devices(client):
    insert(client)
    body = assert_envelope(client.get(f"/api/user/client_device_detail?user_id=12&client_id={CID}"
                                      "&status=anything&name=ignored"), 200)
    assert body["data"] == {"system_info": {"health": 0, "cpu_usage": 0, "memory_usage": 0, "storage_usage": 0,
                                            "device_memsize": 0, "uptime_days": 0}, "device_info": []}


def test_client_device_detail_shows_latest_snapshot_in_index_order(client, db):
    insert(client)
    cid = bytes.fromhex(CID)
    with db.cursor() as cur:
        cur.execute("insert into system_info (client_id, cpu_usage, mem_usage, disk_usage, device_memsize)"
                    " values (%(c)s, 45, 60, 30, 24576)", {"c": cid})
        cur.execute("insert into device_info (client_id, device_index, device_name, device_temp, device_gpuusage,"
                    " device_memusage, device_powerusage) values"
                    " (%(c)s, 1, 'NVIDIA A100', 60, 10, 20, 250),"
                    " (%(c)s, 0, 'NVIDIA GeForce RTX 4090', 72, 85, 75, 350)",
                    {"c": cid})
    data = assert_envelope(client.get(f"/api/user/client_device_detail?user_id=12&client_id={CID}"), 200)["data"]
    assert data["system_info"]["cpu_usage"] == 45 and data["system_info"]["device_memsize"] == 24576
    assert data["device_info"][0] == {"device_index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 72,
                                      "usage": 85, "mem_usage": 75, "power_usage": 350, **UNKNOWN_READINGS}
    assert [d["device_index"] for d in data["device_info"]] == [0, 1]
    assert client_list(client)["devices"][0]["device_name"] == "NVIDIA GeForce RTX 4090"


def test_client_device_detail_of_other_users_client_is_404(client):
    insert(client)
    assert_envelope(client.get(f"/api/user/client_device_detail?user_id=13&client_id={CID}"), 404)
    assert_envelope(client.get(f"/api/user/client_device_detail?user_id=12&client_id={new_client_id()}"), 404)


def test_client_device_detail_requires_client_id(client):
    body = assert_envelope(client.get("/api/user/client_device_detail?user_id=12"), 400)
    assert body["message"].startswith("client_id:")
