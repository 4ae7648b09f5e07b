"""Heartbeat ingestion: validate reports, check their clients, write the accepted ones set-based in one
transaction (heartbeat.sql), then invalidate the cached reads of their clients and owners. Used by the
API and the simulator; single reports go through group commit (gpufs/group_commit.py)."""
import orjson
from marshmallow import ValidationError

from . import metrics, schemas
from .auth import identity, may_report_for
from .cache import client_scope, user_scope
from .db import get_db, queries
from .errors import Forbidden, NotFound, validation_message
from .ext import state

report_in = schemas.Report()

NO_SUCH_CLIENT = "client_id: no such client; register it with insert_client"
INVALID_CLIENT = "client_id: client is marked invalid; its reports are not accepted"
COUNTED = "stored and counted"
NOT_COUNTED = "stored; not counted: its bucket already has a report"
DUPLICATE = "duplicate: this client_id and timestamp is already stored"


def _result(index, status, code, message, counted=False):
    return {"index": index, "status": status, "code": code, "message": message, "counted": counted}


def validate(raw_reports):
    """Load each raw report; returns ([(index, report)], {index: rejected result})."""
    accepted, rejected = [], {}
    for index, raw in enumerate(raw_reports):
        try:
            accepted.append((index, report_in.load(raw)))
        except ValidationError as err:
            rejected[index] = _result(index, "rejected", 400, validation_message(err))
    return accepted, rejected


def ingest(conn, reports, rejected=None, *, settings=None, callers=None):
    """Store loaded `reports` [(index, report)] and return every result, `rejected` ones merged, by index.

    Clients are checked in one query before anything is written; the accepted reports are
    written together in one transaction, so each is fully written or, if the database
    fails, the whole call raises and nothing is. `callers`: the key of each report by index,
    when the reports came from several requests (else the request's key decides for all).
    """
    settings = settings or state().config
    results, stored = _store(conn, reports, rejected, settings, callers or {})
    if stored:
        state().cache.invalidate(*{user_scope(uid) for uid in stored.values()}, *map(client_scope, stored))
    ordered = [results[i] for i in sorted(results)]
    counts = summary(ordered)
    metrics.count_heartbeats(stored=counts["stored"], duplicates=counts["duplicates"], rejected=counts["rejected"])
    return ordered


def _store(conn, reports, rejected, settings, callers):
    results = dict(rejected or {})
    stored = {}
    with conn:
        # A batch whose every report failed validation has no client to check or lock.
        clients = _clients(conn, {report["client_id"] for _, report in reports}) if reports else {}
        accepted = []
        for index, report in reports:
            client = clients.get(report["client_id"])
            # Another user's client is answered as one that does not exist: neither its
            # existence nor its validity is the caller's to learn.
            if client is None or not may_report_for(client["user_id"], callers.get(index)):
                results[index] = _result(index, "rejected", 404, NO_SUCH_CLIENT)
            elif client["valid_status"] == "invalid":
                results[index] = _result(index, "rejected", 403, INVALID_CLIENT)
            else:
                accepted.append((index, report))
        if accepted:
            stored = _write(conn, accepted, clients, settings, results)
    return results, stored


def summary(results):
    """A batch answer: counts per outcome and the results in input order."""
    return {"stored": sum(r["status"] == "stored" for r in results),
            "duplicates": sum(r["status"] == "duplicate" for r in results),
            "rejected": sum(r["status"] == "rejected" for r in results),
            "results": results}


def ingest_one(report):
    """One report of a request, written with those arriving meanwhile in this process (group
    commit) through the batch path; an unregistered or invalid client raises (404, 403)."""
    result = state().reports.submit((report, identity()))
    if result["code"] == 404:
        raise NotFound(result["message"])
    if result["code"] == 403:
        raise Forbidden(result["message"])
    return result


def write_group(items):
    """GroupCommit's write: [(report, caller's key)] in one transaction, on the connection of the
    request whose thread writes them; a result per item, in order."""
    return ingest(get_db(), list(enumerate(report for report, _ in items)),
                  callers={index: who for index, (_, who) in enumerate(items)})


def _clients(conn, client_ids):
    return {bytes(row["client_id"]): row for row in queries.report_clients(conn, client_ids=sorted(client_ids))}


def _write(conn, accepted, clients, settings, results):
    """Write the accepted reports; fill their results and return {client_id: owner} of the stored ones."""
    payload = [orjson.dumps(_row(index, report)).decode() for index, report in accepted]
    params = {"reports": payload, "interval": int(settings["HEARTBEAT_INTERVAL_SECONDS"]),
              "retention_days": int(settings["HEARTBEAT_RETENTION_DAYS"]),
              "raw_days": int(settings["GPU_HISTORY_RAW_DAYS"]),
              "hourly_days": int(settings["GPU_HISTORY_HOURLY_DAYS"])}
    rows = list(queries.ingest_reports(conn, **params))
    by_index = dict(accepted)
    touched = set()
    for row in rows:
        index = row["ord"]
        if row["stored"]:
            touched.add(by_index[index]["client_id"])
            message = COUNTED if row["counted"] else NOT_COUNTED
            results[index] = _result(index, "stored", 200, message, row["counted"])
        else:
            results[index] = _result(index, "duplicate", 200, DUPLICATE)
    return {cid: clients[cid]["user_id"] for cid in touched}


def _row(index, report):
    """A report as one element of ingest-reports' JSON array."""
    system = report["system"]
    ts = report.get("timestamp")
    return {
        "ord": index, "client_id": report["client_id"].hex(), "ts": ts.isoformat() if ts else None,
        "cpu": system["cpu_usage"], "mem": system["memory_usage"], "disk": system["disk_usage"],
        "rx": system["network_rx"], "tx": system["network_tx"],
        "memsize": report.get("device_memsize"), "tflops": report.get("total_tflops"),
        "devices": [_device(d) for d in report["devices"]],
    }


# A GPU's optional readings (contract section 8): absent stays null, never 0.
OPTIONAL_READINGS = ("uuid", "fan_speed", "sm_clock_mhz", "mem_clock_mhz", "mem_total_mb", "mem_used_mb",
                     "power_limit", "ecc_uncorrected", "xid", "processes")


def _device(d):
    row = {"device_index": d["index"], "name": d["name"], "temp": d["temp"], "usage": d["usage"],
           "mem_usage": d["mem_usage"], "power_usage": d["power_usage"]}
    row.update((key, d.get(key)) for key in OPTIONAL_READINGS)
    return row
