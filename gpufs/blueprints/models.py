"""Model catalogue under /api/models: insert and get."""
from flask import Blueprint

from .. import schemas
from ..db import get_db, queries
from ..ext import state
from ..openapi import NULL
from . import Cached, admin_only, endpoint

bp = Blueprint("gpufs_models", __name__)
MODELS_SCOPE = "models"
OPTIONAL = ("is_active", "min_memory_mb", "min_gpu_memory_gb", "download_url", "checksum", "expected_size")


@bp.post("/insert")
@admin_only
@endpoint("Create or update a model (upsert by name and version)", body=schemas.InsertModel, data=NULL,
          conflict=True)
def insert(data):
    with get_db() as conn:
        queries.insert_model(conn, **{key: data.get(key) for key in OPTIONAL}, name=data["name"],
                             version=data["version"], version_code=data["version_code"],
                             engine_type=data["engine_type"], given=[key for key in OPTIONAL if key in data])
    state().cache.invalidate(MODELS_SCOPE)


@bp.get("/get")
@endpoint("The model catalogue, largest GPU requirement first", query=schemas.ModelsQuery,
          data=schemas.ModelItem, many=True)
def get(args):
    return Cached(MODELS_SCOPE, args, lambda: list(queries.models_list(
        get_db(), is_active=args.get("is_active"), min_gpu_memory_gb=args.get("min_gpu_memory_gb"))))
