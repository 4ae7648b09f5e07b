"""The gpufs-agent command: flags (each with an environment variable), the state directory and the
report loop."""
import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from .collect import Collector
from .gpus import gpu_reader
from .send import Buffer, Delivery, Stop, Transport

log = logging.getLogger("gpufs_agent")

EXIT_UNDELIVERED = 1  # --once: the report was kept for later or refused
EXIT_STOPPED = 3  # the server refuses this client or token
EXIT_LOCKED = 4  # another agent uses the same state directory
TRUE = ("1", "true", "yes", "on")


def default_state_dir(env=os.environ):
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gpufs-agent")


def _hex32(text):
    if not re.fullmatch(r"[0-9a-fA-F]{32}", text or ""):
        raise argparse.ArgumentTypeError("must be 32 hexadecimal characters")
    return text.lower()


def _text32(text):
    if not 1 <= len(text) <= 32:
        raise argparse.ArgumentTypeError("must be 1-32 characters")
    return text


def _positive(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def build_parser(env=os.environ):
    def opt(flag, var, default=None, **kw):
        kw["help"] = f"{kw.get('help', '')} [env {var}]".strip() + (f" (default {default})" if default else "")
        p.add_argument(flag, default=env.get(var, default), **kw)

    def switch(flags, var, text):
        p.add_argument(*flags, action="store_true", default=env.get(var, "").lower() in TRUE,
                       help=f"{text} [env {var}]")

    p = argparse.ArgumentParser(prog="gpufs-agent", description="Report this machine's CPU, memory, disk, network "
                                "and GPU figures to a gpuf-s server.")
    opt("--server", "GPUFS_SERVER", "http://127.0.0.1:18081", metavar="URL", help="server base URL")
    opt("--client-id", "GPUFS_CLIENT_ID", type=_hex32, metavar="HEX",
        help="32 hex digits; without it, one generated once and kept in the state directory")
    opt("--state-dir", "GPUFS_AGENT_STATE", default_state_dir(env), metavar="DIR",
        help="client id, network counters and undelivered reports")
    opt("--user", "GPUFS_USER", type=_text32, help="owner's user_id: an unknown client is registered under it")
    opt("--name", "GPUFS_NAME", socket.gethostname()[:32] or "gpufs-agent", type=_text32,
        help="client name used when registering")
    opt("--token", "GPUFS_TOKEN", metavar="KEY", help="API key, sent as Authorization: Bearer (token mode)")
    opt("--interval", "GPUFS_INTERVAL", 60.0, type=_positive, metavar="SECONDS", help="seconds between reports")
    opt("--timeout", "GPUFS_TIMEOUT", 10.0, type=_positive, metavar="SECONDS", help="per-request timeout")
    opt("--retries", "GPUFS_RETRIES", 3, type=int, metavar="N", help="retries of a failed request")
    opt("--backoff", "GPUFS_BACKOFF", 1.0, type=float, metavar="SECONDS",
        help="first retry delay, doubled each retry, jittered")
    opt("--buffer-size", "GPUFS_BUFFER_SIZE", 10000, type=int, metavar="N",
        help="undelivered reports kept; the oldest go first")
    switch(["--once"], "GPUFS_ONCE", "send one report and exit")
    switch(["--dry-run"], "GPUFS_DRY_RUN", "print reports as JSON instead of sending them")
    switch(["-v", "--verbose"], "GPUFS_VERBOSE", "log every report and answer")
    return p


def stable_client_id(state_dir):
    """This machine's client id: generated on first use and kept, so restarts report as the same client."""
    path = Path(state_dir, "client_id")
    try:
        return _hex32(path.read_text().strip())
    except FileNotFoundError:
        pass
    except argparse.ArgumentTypeError as err:
        raise SystemExit(f"gpufs-agent: {path} is not a client id ({err}); remove it or pass --client-id") from None
    client_id = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(client_id + "\n")
    os.replace(tmp, path)
    return client_id


@contextlib.contextmanager
def state_lock(state_dir):
    """Held while the agent runs: two agents on one state would send duplicate, racing reports."""
    try:
        import fcntl
    except ImportError:  # not on Windows; the lock is a convenience, not a requirement
        yield True
        return
    with open(Path(state_dir, "lock"), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True


def run(collector, delivery, interval, once, stop):
    next_at = time.monotonic()
    while True:
        delivered = delivery.send(collector.report())
        if once:
            return 0 if delivered else EXIT_UNDELIVERED
        # Fixed rate, not fixed delay, but without a burst of catch-up reports after a stall.
        next_at = max(next_at + interval, time.monotonic())
        if stop.wait(next_at - time.monotonic()):
            return 0


def dry_run(collector, interval, once, stop):
    while True:
        print(json.dumps(collector.report(), indent=2), flush=True)
        if once or stop.wait(interval):
            return 0


def main(argv=None, stop=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    stop = stop or threading.Event()
    if not args.once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
    client_id = args.client_id or stable_client_id(args.state_dir)
    gpus = gpu_reader()
    try:
        collector = Collector(client_id, gpus, net_state=os.path.join(args.state_dir, "net.json"),
                              persist=not args.dry_run)
        if args.dry_run:
            return dry_run(collector, args.interval, args.once, stop)
        with state_lock(args.state_dir) as locked:
            if not locked:
                log.error("another gpufs-agent is running with state directory %s", args.state_dir)
                return EXIT_LOCKED
            transport = Transport(args.server, args.token, timeout=args.timeout, retries=max(args.retries, 0),
                                  backoff=args.backoff)
            buffer = Buffer(os.path.join(args.state_dir, "buffer.jsonl"), args.buffer_size)
            delivery = Delivery(transport, buffer, client_id, user=args.user, name=args.name)
            log.info("client %s reporting to %s every %gs; GPUs via %s; %d buffered reports", client_id,
                     args.server, args.interval, gpus.source, len(buffer))
            return run(collector, delivery, args.interval, args.once, stop)
    except Stop as err:
        log.error("stopping: %s", err)
        return EXIT_STOPPED
    finally:
        gpus.close()
