"""Heartbeat ingestion under /api/client: heartbeat (one report) and heartbeats (a batch)."""
from flask import Blueprint

bp = Blueprint("gpufs_client", __name__)
