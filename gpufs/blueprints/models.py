"""Model catalogue under /api/models: insert and get."""
from flask import Blueprint

from .. import schemas
from ..auth import require_admin
from ..db import dumped_rows, get_db, one_row, queries, state
from ..envelope import respond
from . import cached_response, load_args, load_json

bp = Blueprint("gpufs_models", __name__)
MODELS_SCOPE = "models"
OPTIONAL = ("is_active", "min_memory_mb", "min_gpu_memory_gb", "download_url", "checksum", "expected_size")

insert_in = schemas.InsertModel()
list_in = schemas.ModelsQuery()
list_out = schemas.Shape(schemas.ModelItem(many=True))


@bp.post("/insert")
def insert():
    require_admin()
    data = load_json(insert_in)
    params = {key: data.get(key) for key in OPTIONAL}
    with get_db():
        one_row(queries.insert_model, name=data["name"], version=data["version"],
                version_code=data["version_code"], engine_type=data["engine_type"],
                given=[key for key in OPTIONAL if key in data], **params)
    state().cache.invalidate(MODELS_SCOPE)
    return respond(None)


@bp.get("/get")
def get():
    args = load_args(list_in)
    return cached_response(MODELS_SCOPE, "models_get", dict(args),
                           lambda: dumped_rows(queries.models_list, list_out, is_active=args.get("is_active"),
                                               min_gpu_memory_gb=args.get("min_gpu_memory_gb")))
