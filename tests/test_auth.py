"""AUTH_MODE=token: the key matrix on every endpoint, the token CLI, revocation and the CORS default."""
import time

import pytest

from gpufs import create_app

from .conftest import assert_envelope

CID = "6e1131b4b9cc454aa6ce3294ab860b2d"
MODEL = {"name": "m", "version": "1", "version_code": 1, "engine_type": 0}


@pytest.fixture
def token_app(app_config, db):
    app = create_app({**app_config, "AUTH_MODE": "token", "AUTH_CACHE_SECONDS": 30})
    yield app
    app.extensions["gpufs"].close()


def create_key(app, *args):
    result = app.test_cli_runner().invoke(args=["gpufs", "token", "create", *args])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[0]
    token_id, key = line.removeprefix("id ").split(": ")
    return int(token_id), key


@pytest.fixture
def keys(token_app, db):
    own_id, own = create_key(token_app, "--user", "12")
    _, other = create_key(token_app, "--user", "13")
    _, admin = create_key(token_app, "--user", "1", "--admin")
    expired_id, expired = create_key(token_app, "--user", "12", "--expires", "1")
    with db.cursor() as cur:
        cur.execute("update tokens set expired_time = %(t)s where id = %(id)s", {"t": int(time.time()) - 1,
                                                                                "id": expired_id})
        cur.execute("insert into tokens (user_id, key) values (12, %(k)s)", {"k": "u" * 48})
    revoked_id, revoked = create_key(token_app, "--user", "12")
    result = token_app.test_cli_runner().invoke(args=["gpufs", "token", "revoke", str(revoked_id)])
    assert result.exit_code == 0
    return {"own": own, "other": other, "admin": admin, "expired": expired, "revoked": revoked,
            "upstream": "u" * 48, "own_id": own_id}


def call(client, key, method, path, body=None, header=None):
    headers = {"Authorization": header if header is not None else f"Bearer {key}"} if key or header else {}
    resp = client.post(path, json=body, headers=headers) if method == "POST" else client.get(path, headers=headers)
    resp.get_data()  # a streamed body is read to the end, as any HTTP client would
    return resp


USER_CALLS = [
    ("POST", "/api/user/insert_client", {"user_id": "12", "client_id": CID, "client_status": "online",
                                         "name": "n"}),
    ("GET", "/api/user/client_list?user_id=12", None),
    ("GET", "/api/user/client_status_list?user_id=12", None),
    ("GET", f"/api/user/client_device_detail?user_id=12&client_id={CID}", None),
    ("POST", "/api/user/edit_client_info", {"user_id": "12", "client_id": CID, "name": "x"}),
    ("GET", "/api/user/client_stat?user_id=12", None),
    ("GET", "/api/user/client_monitor?user_id=12", None),
    ("GET", "/api/user/client_health?user_id=12", None),
]
ALL_CALLS = USER_CALLS + [("GET", "/api/models/get", None), ("POST", "/api/models/insert", MODEL),
                          ("POST", "/api/client/heartbeat", {"client_id": CID}),
                          ("POST", "/api/client/heartbeats", {"reports": [{"client_id": CID}]}),
                          ("GET", "/api/user/nowhere", None)]


@pytest.mark.parametrize("method, path, body", ALL_CALLS)
@pytest.mark.parametrize("who, header", [
    ("nobody", None), ("expired", None), ("revoked", None), ("malformed", "Token abc"),
    ("malformed", "Bearer "), ("malformed", "Bearer a\x01b"), ("unknown", "Bearer " + "z" * 48),
])
def test_missing_or_bad_key_is_401_everywhere(token_app, keys, method, path, body, who, header):
    client = token_app.test_client()
    key = keys.get(who)
    body_out = assert_envelope(call(client, key, method, path, body, header), 401)
    assert body_out["message"].startswith("authorization")


@pytest.mark.parametrize("method, path, body", USER_CALLS)
def test_own_key_works_and_other_users_key_is_403(token_app, keys, method, path, body):
    client = token_app.test_client()
    call(client, keys["own"], *USER_CALLS[0])  # the client exists, so detail and edit can be 200
    assert call(client, keys["own"], method, path, body).status_code == 200
    assert call(client, keys["upstream"], method, path, body).status_code == 200
    assert call(client, keys["admin"], method, path, body).status_code == 200
    denied = assert_envelope(call(client, keys["other"], method, path, body), 403)
    assert denied["message"].startswith("user_id:")


def test_models_insert_needs_an_admin_key(token_app, keys):
    client = token_app.test_client()
    assert_envelope(call(client, keys["own"], "POST", "/api/models/insert", MODEL), 403)
    assert_envelope(call(client, keys["admin"], "POST", "/api/models/insert", MODEL), 200)
    assert len(assert_envelope(call(client, keys["own"], "GET", "/api/models/get"), 200)["data"]) == 1


def test_revocation_takes_effect_within_the_key_cache_time(app_config, db):
    app = create_app({**app_config, "AUTH_MODE": "token", "AUTH_CACHE_SECONDS": 0})
    token_id, key = create_key(app, "--user", "12")
    client = app.test_client()
    assert call(client, key, "GET", "/api/user/client_list?user_id=12").status_code == 200
    app.test_cli_runner().invoke(args=["gpufs", "token", "revoke", str(token_id)])
    assert call(client, key, "GET", "/api/user/client_list?user_id=12").status_code == 401
    app.extensions["gpufs"].close()


def test_keys_are_stored_only_as_hashes(token_app, keys, db):
    with db.cursor() as cur:
        cur.execute("select key, key_hash from tokens where id = %(id)s", {"id": keys["own_id"]})
        stored_key, stored_hash = cur.fetchone()
    assert keys["own"] not in (stored_key, stored_hash)
    # The public identifier in `key` never authenticates.
    client = token_app.test_client()
    assert call(client, stored_key, "GET", "/api/user/client_list?user_id=12").status_code == 401


def test_token_list_never_shows_secrets(token_app, keys):
    out = token_app.test_cli_runner().invoke(args=["gpufs", "token", "list"]).output
    assert keys["own"] not in out and "admin" in out and "user 12" in out


def test_token_mode_has_no_wildcard_cors(token_app):
    resp = token_app.test_client().options("/api/models/get", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_exposed_bind_without_auth_warns(app_config, caplog):
    create_app({**app_config, "GPUFS_BIND": "0.0.0.0:18081"})
    assert any("AUTH_MODE=none" in r.getMessage() for r in caplog.records)


def test_heartbeats_need_a_key_of_the_clients_owner_or_an_admin(token_app, keys, db):
    client = token_app.test_client()
    call(client, keys["own"], *USER_CALLS[0])
    report = {"client_id": CID, "system": {"cpu_usage": 1, "memory_usage": 2, "disk_usage": 3,
                                           "network_rx": 0, "network_tx": 0}}
    # Answered as a client that does not exist (issue 23, F9): 404, not 403.
    denied = assert_envelope(call(client, keys["other"], "POST", "/api/client/heartbeat", report), 404)
    assert denied["message"].startswith("client_id:")
    batch = assert_envelope(call(client, keys["other"], "POST", "/api/client/heartbeats", {"reports": [report]}), 200)
    assert batch["data"]["results"][0]["code"] == 404
    with db.cursor() as cur:
        cur.execute("select count(*) from heartbeat")
        assert cur.fetchone()[0] == 0
    assert call(client, keys["own"], "POST", "/api/client/heartbeat", report).status_code == 200
    report["timestamp"] = "2026-01-01T00:00:00Z"
    assert call(client, keys["admin"], "POST", "/api/client/heartbeat", report).status_code == 200


def test_a_heartbeat_for_another_users_client_is_answered_as_for_no_client(token_app, keys, db):
    # Neither existence nor validity of another user's client shows (issue 23, F9).
    client = token_app.test_client()
    call(client, keys["own"], *USER_CALLS[0])
    report = {"client_id": CID, "system": {"cpu_usage": 1, "memory_usage": 2, "disk_usage": 3,
                                           "network_rx": 0, "network_tx": 0}}
    missing = {**report, "client_id": "f" * 32}
    answers = [call(client, keys["other"], "POST", "/api/client/heartbeat", body) for body in (report, missing)]
    call(client, keys["own"], "POST", "/api/user/edit_client_info",
         {"user_id": "12", "client_id": CID, "valid_status": "invalid"})
    answers.append(call(client, keys["other"], "POST", "/api/client/heartbeat", report))
    bodies = [assert_envelope(resp, 404) for resp in answers]
    assert len({body["message"] for body in bodies}) == 1
    batch = assert_envelope(call(client, keys["other"], "POST", "/api/client/heartbeats",
                                 {"reports": [report, missing]}), 200)["data"]["results"]
    assert [(r["code"], r["message"]) for r in batch] == [(404, bodies[0]["message"])] * 2
