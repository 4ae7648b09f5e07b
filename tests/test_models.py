"""Model catalogue: models/insert upsert, 409, validation; models/get filters and order."""
import pytest

from .conftest import assert_envelope

LLAMA = {"name": "llama-2-7b", "version": "1.0", "version_code": 1, "engine_type": 0, "is_active": True,
         "min_memory_mb": 8192, "min_gpu_memory_gb": 16}


def insert(client, **fields):
    body = dict(LLAMA)
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not ...}
    return client.post("/api/models/insert", json=body)


def models(client, query=""):
    return assert_envelope(client.get("/api/models/get" + query), 200)["data"]


def test_models_insert_then_get_returns_seed_fields(client):
    body = assert_envelope(insert(client), 200)
    assert body["data"] is None
    [item] = models(client)
    assert isinstance(item["id"], int)
    assert {k: item[k] for k in LLAMA} == LLAMA
    assert item["created_at"].endswith("Z")
    assert item["download_url"] is None and item["checksum"] is None and item["expected_size"] is None


def test_models_insert_is_active_defaults_true_on_create(client):
    insert(client, is_active=..., min_memory_mb=..., min_gpu_memory_gb=...)
    [item] = models(client)
    assert item["is_active"] is True and item["min_memory_mb"] is None


def test_models_insert_same_name_version_updates_and_omitted_fields_keep_values(client):
    insert(client, download_url="https://example.com/llama.gguf", checksum="sha256:" + "a" * 64,
           expected_size=123, is_active=False)
    assert_envelope(insert(client, version_code=2, engine_type=3, is_active=..., min_memory_mb=...,
                           min_gpu_memory_gb=..., download_url=...), 200)
    [item] = models(client)
    assert item["version_code"] == 2 and item["engine_type"] == 3
    assert item["is_active"] is False
    assert item["min_memory_mb"] == 8192 and item["min_gpu_memory_gb"] == 16
    assert item["download_url"] == "https://example.com/llama.gguf" and item["expected_size"] == 123


def test_models_insert_explicit_null_clears_optional_field(client):
    insert(client, checksum="b" * 64)
    insert(client, min_gpu_memory_gb=None, checksum=None)
    [item] = models(client)
    assert item["min_gpu_memory_gb"] is None and item["checksum"] is None and item["min_memory_mb"] == 8192


def test_models_insert_version_code_of_other_version_is_409(client):
    insert(client)
    body = assert_envelope(insert(client, version="2.0", version_code=1), 409)
    assert "version_code" in body["message"]
    assert [m["version"] for m in models(client)] == ["1.0"]
    assert_envelope(insert(client, name="other-model", version="9", version_code=1), 200)


@pytest.mark.parametrize("fields, field", [
    ({"name": ""}, "name"),
    ({"name": "n" * 101}, "name"),
    ({"name": ...}, "name"),
    ({"version": ""}, "version"),
    ({"version": "v" * 51}, "version"),
    ({"version": 1.0}, "version"),
    ({"version_code": 0}, "version_code"),
    ({"version_code": "1"}, "version_code"),
    ({"version_code": 1.5}, "version_code"),
    ({"version_code": True}, "version_code"),
    ({"version_code": ...}, "version_code"),
    ({"engine_type": -1}, "engine_type"),
    ({"engine_type": "0"}, "engine_type"),
    ({"engine_type": ...}, "engine_type"),
    ({"is_active": "true"}, "is_active"),
    ({"is_active": 1}, "is_active"),
    ({"min_memory_mb": -1}, "min_memory_mb"),
    ({"min_gpu_memory_gb": "16"}, "min_gpu_memory_gb"),
    ({"download_url": "ftp://example.com/x"}, "download_url"),
    ({"download_url": "not a url"}, "download_url"),
    ({"checksum": "sha256:abc"}, "checksum"),
    ({"checksum": "z" * 64}, "checksum"),
    ({"expected_size": -5}, "expected_size"),
])
def test_models_insert_rejects_bad_field(client, fields, field):
    body = assert_envelope(insert(client, **fields), 400)
    assert body["message"].startswith(field + ":")
    assert models(client) == []


def test_models_insert_accepts_length_bounds(client):
    assert_envelope(insert(client, name="n" * 100, version="v" * 50), 200)


def test_models_get_filters_active_and_gpu_fit(client):
    insert(client, name="small", version="1", version_code=1, min_gpu_memory_gb=8)
    insert(client, name="big", version="1", version_code=1, min_gpu_memory_gb=80)
    insert(client, name="any", version="1", version_code=1, min_gpu_memory_gb=None)
    insert(client, name="off", version="1", version_code=1, min_gpu_memory_gb=4, is_active=False)
    assert [m["name"] for m in models(client, "?is_active=true")] == ["big", "small", "any"]
    assert [m["name"] for m in models(client, "?is_active=FALSE")] == ["off"]
    assert [m["name"] for m in models(client, "?is_active=1&min_gpu_memory_gb=16")] == ["small", "any"]
    assert [m["name"] for m in models(client, "?min_gpu_memory_gb=8")] == ["small", "off", "any"]


def test_models_get_orders_by_requirement_then_version_code(client):
    insert(client, name="m", version="1", version_code=1, min_gpu_memory_gb=16)
    insert(client, name="m", version="3", version_code=3, min_gpu_memory_gb=16)
    insert(client, name="m", version="2", version_code=2, min_gpu_memory_gb=24)
    insert(client, name="n", version="1", version_code=7, min_gpu_memory_gb=None)
    assert [(m["name"], m["version"]) for m in models(client)] == [("m", "2"), ("m", "3"), ("m", "1"), ("n", "1")]


@pytest.mark.parametrize("query", ["?is_active=yes", "?is_active=", "?min_gpu_memory_gb=abc",
                                   "?min_gpu_memory_gb=-1", "?min_gpu_memory_gb=1.5"])
def test_models_get_rejects_bad_query(client, query):
    assert_envelope(client.get("/api/models/get" + query), 400)
