"""Heartbeat ingestion under /api/client: heartbeat (one report) and heartbeats (a batch)."""
from flask import Blueprint

from .. import ingest, schemas
from ..db import get_db
from ..envelope import respond
from ..metrics import counts_rejected_report
from . import json_object

bp = Blueprint("gpufs_client", __name__)

batch_in = schemas.ReportBatch()
result_out = schemas.IngestResult()
batch_out = schemas.BatchResult()


@bp.post("/heartbeat")
@counts_rejected_report
def heartbeat():
    report = ingest.report_in(json_object())
    return respond(result_out.dump(ingest.ingest_one(get_db(), report)))


@bp.post("/heartbeats")
def heartbeats():
    batch = batch_in.load(json_object())
    reports, rejected = ingest.validate(batch["reports"])
    return respond(batch_out.dump(ingest.summary(ingest.ingest(get_db(), reports, rejected))))
