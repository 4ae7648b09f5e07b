"""Heartbeat ingestion under /api/client: heartbeat (one report) and heartbeats (a batch)."""
from flask import Blueprint

from .. import ingest, schemas
from ..db import get_db
from ..metrics import counts_rejected_report
from . import endpoint

bp = Blueprint("gpufs_client", __name__)


@bp.post("/heartbeat")
@counts_rejected_report  # around the body's loading
@endpoint("Report one heartbeat (retries of the same timestamp are stored once)", body=schemas.Report,
          data=schemas.IngestResult)
def heartbeat(report):
    return ingest.ingest_one(report)


@bp.post("/heartbeats")
@endpoint("Report up to 1000 heartbeats; a bad report never blocks the rest", body=schemas.ReportBatch,
          data=schemas.BatchResult)
def heartbeats(batch):
    reports, rejected = ingest.validate(batch["reports"])
    return ingest.summary(ingest.ingest(get_db(), reports, rejected))
