"""Counters for the metrics endpoint (to be backed by prometheus-client)."""


def count_heartbeats(stored=0, duplicates=0, rejected=0):
    """Record the outcome of an ingestion request."""
