"""The database's own cost, measured from this process: the read endpoints' SQL in a psycopg2 loop,
and the write limit of the data model, COPYing the rows heartbeat reports produce."""
import io
import os
import statistics
import time
from datetime import datetime, timezone

import psycopg2

# What one report of 8 GPUs writes (heartbeat.sql's ingest-reports): the raw heartbeat, its
# bucket claim, the snapshot (system_info, a device_info row per GPU), the daily rollups
# (client_daily_stats, a device_daily_stats row per GPU) and the per-GPU history (a sample and an
# hourly rollup per GPU). Fixed names, never input.
GPUS = 8
TABLES = {
    "heartbeat": "client_id, cpu_usage, mem_usage, disk_usage, network_up, network_down, timestamp, created_at",
    "heartbeat_bucket": "client_id, bucket_start",
    "system_info": "client_id, cpu_usage, mem_usage, disk_usage, device_memsize, device_count, total_tflops, "
                   "reported_at, last_seen_at, created_at, updated_at",
    "device_info": "client_id, device_index, device_name, device_memusage, device_gpuusage, device_powerusage, "
                   "device_temp, created_at, updated_at",
    "client_daily_stats": "date, client_id, total_heartbeats, health_heartbeats, avg_cpu_usage, avg_memory_usage, "
                          "avg_disk_usage, total_network_in_bytes, total_network_out_bytes, last_heartbeat, "
                          "last_heartbeat_bucket, created_at, updated_at",
    "device_daily_stats": "date, client_id, device_index, device_name, total_heartbeats, avg_utilization, "
                          "avg_temperature, avg_power_usage, avg_memory_usage, last_heartbeat, "
                          "last_heartbeat_bucket, created_at, updated_at",
    "gpufs_gpu_samples": "client_id, device_index, reported_at, name, uuid, temp, usage, mem_usage, power_usage, "
                         "fan_speed, sm_clock_mhz, mem_clock_mhz, mem_total_mb, mem_used_mb, power_limit",
    "gpufs_gpu_hourly": "client_id, device_index, hour, name, uuid, last_reported_at, samples, temp_sum, temp_max, "
                        "usage_sum, usage_max, mem_usage_sum, power_sum, power_max",
}
ROWS_PER_REPORT = 1 + 1 + 1 + GPUS + 1 + GPUS + GPUS + GPUS


def sql_loop(dsn, statements, seconds, warmup=0.5, spacing=0.0):
    """Seconds per round of `statements` [(aiosql query, params)], each executed and fetched, in a
    loop, through plain psycopg2 in autocommit (the query's own SQL text, the same parameters). With
    `spacing`, this process keeps its CPU busy that long between rounds (not timed), as a server does
    between one request's SQL and the next: on a VM the database then wakes from idle for each
    statement, which a tight loop never lets it do."""
    conn = psycopg2.connect(dsn, options="-c TimeZone=UTC")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            def once():
                for query, params in statements:
                    cur.execute(query.sql, params)
                    cur.fetchall()

            deadline = time.monotonic() + warmup
            while time.monotonic() < deadline:
                once()
            rounds, spent, began = 0, 0.0, time.monotonic()
            while rounds == 0 or time.monotonic() - began < seconds:
                if spacing:
                    busy_until = time.perf_counter() + spacing
                    while time.perf_counter() < busy_until:
                        pass
                started = time.perf_counter()
                once()
                spent += time.perf_counter() - started
                rounds += 1
            return spent / rounds
    finally:
        conn.close()


def copy_limit(dsn, reports, repeats):
    """Rows/s COPYing the rows of `reports` reports (new clients) into the tables, committed; the median
    of `repeats` runs. The rows are deleted again after each run."""
    conn = psycopg2.connect(dsn, options="-c TimeZone=UTC")
    rates = []
    try:
        for _ in range(repeats):
            ids = [os.urandom(16) for _ in range(reports)]
            buffers = _copy_data(ids, datetime.now(timezone.utc))
            began = time.monotonic()
            with conn, conn.cursor() as cur:
                for table, data in buffers.items():
                    cur.copy_expert(f"copy {table} ({TABLES[table]}) from stdin", io.StringIO(data))
            rates.append(reports * ROWS_PER_REPORT / (time.monotonic() - began))
            with conn, conn.cursor() as cur:
                for table in TABLES:
                    cur.execute(f"delete from {table} where client_id = any(%(ids)s)",
                                {"ids": [psycopg2.Binary(i) for i in ids]})
    finally:
        conn.close()
    return statistics.median(rates), rates


def _copy_data(ids, now):
    ts = now.isoformat()
    hour = now.replace(minute=0, second=0, microsecond=0).isoformat()
    day = now.date().isoformat()
    bucket = int(now.timestamp()) // 120
    rows = {table: [] for table in TABLES}
    for n, raw in enumerate(ids):
        cid = "\\\\x" + raw.hex()  # bytea in COPY's text format: the backslash itself escaped
        rows["heartbeat"].append(f"{cid}\t{n % 90}\t50\t45\t200000\t1000000\t{ts}\t{ts}")
        rows["heartbeat_bucket"].append(f"{cid}\t{ts}")
        rows["system_info"].append(f"{cid}\t{n % 90}\t50\t45\t652472\t{GPUS}\t535\t{ts}\t{ts}\t{ts}\t{ts}")
        rows["client_daily_stats"].append(
            f"{day}\t{cid}\t1\t1\t{n % 90}\t50\t45\t1000000\t200000\t{ts}\t{bucket}\t{ts}\t{ts}")
        for g in range(GPUS):
            rows["device_info"].append(f"{cid}\t{g}\tNVIDIA H100 80GB HBM3\t60\t70\t450\t55\t{ts}\t{ts}")
            rows["device_daily_stats"].append(
                f"{day}\t{cid}\t{g}\tNVIDIA H100 80GB HBM3\t1\t70\t55\t450\t60\t{ts}\t{bucket}\t{ts}\t{ts}")
            uuid = f"GPU-{raw.hex()[:8]}-0000-0000-0000-{g:012d}"
            rows["gpufs_gpu_samples"].append(
                f"{cid}\t{g}\t{ts}\tNVIDIA H100 80GB HBM3\t{uuid}\t55\t70\t60\t450\t40\t1980\t2619\t81559\t48935\t700")
            rows["gpufs_gpu_hourly"].append(
                f"{cid}\t{g}\t{hour}\tNVIDIA H100 80GB HBM3\t{uuid}\t{ts}\t1\t55\t55\t70\t70\t60\t450\t450")
    return {table: "\n".join(lines) + "\n" for table, lines in rows.items()}
