"""Per-GPU history (contract section 8): device_history's range, step and answer, and the upkeep of
the sample tables' time partitions (a background task, migrate and `prune`)."""
import logging
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2.errors

from .db import queries
from .errors import Invalid
from .tasks import Task

log = logging.getLogger("gpufs.history")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STEPS = (120, 300, 600, 1800, 3600, 21600, 86400)  # the default step: the first giving few enough points
AUTO_POINTS = 500
MAX_POINTS = 10_000
HOUR = 3600
HALF_HOUR = 1800  # what a rollup row holds (migration 0016)
DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=400)
# Partitions are made this far ahead, so reports keep landing in their own partition even when the
# task has not run for days (a report with no partition still stores, in the default one).
AHEAD = timedelta(days=3)
UPKEEP_SECONDS = 3600


def buckets(low, high, step):
    """How many buckets of `step` seconds (from the epoch) the range [low, high) touches."""
    if high <= low:
        return 0
    width = timedelta(seconds=step)
    return -((EPOCH - high) // width) - (low - EPOCH) // width


def plan(low, high, step, now, raw_days):
    """The range [low, high), the step and the source of a device_history request (`low`, `high`
    and `step` as asked, None when not); Invalid when the range or the step asks too much. Beyond
    the raw samples' retention, the hourly rollups answer, with a step of whole hours."""
    high = high or now
    low = low or high - DEFAULT_RANGE
    if high - low > MAX_RANGE:
        raise Invalid("start_date: the range from start_date to end_date must not exceed 400 days")
    hourly = low < now - timedelta(days=raw_days)
    if step is None:
        step = next(s for s in STEPS if (s >= HOUR or not hourly) and buckets(low, high, s) <= AUTO_POINTS)
    elif buckets(low, high, step) > MAX_POINTS:
        raise Invalid(f"step: {step} s gives more than {MAX_POINTS} points per GPU over this range; "
                      "choose a larger step or a shorter range")
    elif hourly:
        step = -(-step // HOUR) * HOUR  # each hour's rollup in exactly one bucket
    whole_from, whole_to = whole(low, high, step) if step % HALF_HOUR == 0 else (high, high)
    return {"time_from": low, "time_to": high, "step": step, "hourly": hourly,
            "whole_from": whole_from, "whole_to": whole_to}


def whole(low, high, step):
    """The buckets of `step` seconds wholly inside [low, high), as [from, to); (high, high) when none.
    With a step of whole half hours, these are read from the rollups (sql/history.sql)."""
    width = timedelta(seconds=step)
    first = EPOCH - (EPOCH - low) // width * width  # the first bucket start at or after low
    last = EPOCH + (high - EPOCH) // width * width  # the end of the last bucket ending by high
    return (first, last) if first < last else (high, high)


def device_history(conn, user_id, client_id, device_index, span):
    """The points of the chosen source grouped per GPU, or None when the client is not the user's."""
    params = {"user_id": user_id, "client_id": client_id, "device_index": device_index,
              "time_from": span["time_from"], "time_to": span["time_to"], "step": span["step"]}
    if span["hourly"]:  # the hour holding the range's start, whole
        params["time_from"] = EPOCH + (span["time_from"] - EPOCH) // timedelta(hours=1) * timedelta(hours=1)
        rows = list(queries.device_history_hourly(conn, **params))
    else:
        whole_from, whole_to = span["whole_from"], span["whole_to"]
        if whole_from < whole_to:  # only the buckets from where the rollups hold half hours
            since = queries.gpu_half_hours_since(conn)
            whole_from, whole_to = whole(max(whole_from, since or whole_to), whole_to, span["step"])
        rows = list(queries.device_history(conn, whole_from=whole_from, whole_to=whole_to, **params))
    if not rows:
        return None
    # A row per GPU with its points as JSON text, embedded in the answer as it is (schemas.Points);
    # none when the client has no sample in the range.
    return [{"device_index": row["device_index"], "name": row["name"], "uuid": row["uuid"],
             "points": orjson.Fragment(row["points"])}
            for row in rows if row["device_index"] is not None]


# ---- partition upkeep --------------------------------------------------------------------------

def ensure(conn, now, raw_days=1, hourly_days=1):
    """Make the partitions from `raw_days`/`hourly_days` back to AHEAD of `now`, and move any row the
    default partitions hold into its own; returns the names made. Each kind in a transaction of
    its own, so a lock is never held longer than its own work."""
    made = []
    for kind, days in (("raw", raw_days), ("hourly", hourly_days)):
        with conn:
            made += queries.gpu_history_ensure(conn, kind=kind, time_from=now - timedelta(days=days),
                                               time_to=now + AHEAD)
    return made


def drop(conn, now, raw_days, hourly_days):
    """Drop the partitions wholly older than the retention of their kind; returns the names dropped.
    Apart from `ensure`'s transactions: a drop locks the whole table, and must not wait holding
    a lock a report needs. A table too busy to lock keeps its old partitions until the next run."""
    dropped = []
    for kind, days in (("raw", raw_days), ("hourly", hourly_days)):
        try:
            with conn:
                dropped += queries.gpu_history_drop(conn, kind=kind, before=now - timedelta(days=days))
        except psycopg2.errors.LockNotAvailable:
            log.warning("old %s GPU history partitions not dropped: the table stayed busy; next run", kind)
    return dropped


def upkeep(conn, now, settings):
    """What the periodic task does: partitions made ahead for the retention windows, old ones dropped."""
    raw_days, hourly_days = int(settings["GPU_HISTORY_RAW_DAYS"]), int(settings["GPU_HISTORY_HOURLY_DAYS"])
    return {"made": ensure(conn, now, raw_days, hourly_days), "dropped": drop(conn, now, raw_days, hourly_days)}


def task(settings):
    return Task("gpu-history-partitions", UPKEEP_SECONDS, lambda conn, now: upkeep(conn, now, settings))
