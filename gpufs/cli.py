"""`flask --app app gpufs ...` commands."""
import click
from flask import current_app
from flask.cli import AppGroup

from .tokens_cli import token_cli

gpufs_cli = AppGroup("gpufs", help="gpuf-s server administration.")
gpufs_cli.add_command(token_cli)


@gpufs_cli.command("migrate")
def migrate_command():
    """Apply pending database migrations."""
    from .migrate import migrate
    cfg = current_app.extensions["gpufs"].config
    applied = migrate(cfg["DATABASE_URL"], int(cfg["DB_CONNECT_TIMEOUT"]))
    click.echo("applied: " + (", ".join(applied) if applied else "nothing, schema is current"))


@gpufs_cli.command("simulate")
@click.option("--clients", default=10, show_default=True, type=click.IntRange(1, 10_000),
              help="Machines to register.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 365),
              help="Days of history to report, ending now.")
@click.option("--user", default="demo", show_default=True, help="user_id that owns the machines (1-32 characters).")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed: the same seed, the same fleet.")
@click.option("--follow", is_flag=True, help="Then keep reporting in real time until interrupted (Ctrl-C).")
def simulate_command(clients, days, user, seed, follow):
    """Register a fleet and feed it days of plausible heartbeats through the ingestion path."""
    import time
    from datetime import datetime, timezone

    from . import fleet, history
    state = current_app.extensions["gpufs"]
    if not 1 <= len(user) <= 32:
        raise click.BadParameter("must be 1-32 characters", param_hint="--user")
    if days > int(state.config["HEARTBEAT_RETENTION_DAYS"]):
        raise click.BadParameter("must not exceed HEARTBEAT_RETENTION_DAYS: older reports are not counted",
                                 param_hint="--days")
    sim = fleet.Simulation(state.config, clients, days, user, seed)
    began = time.monotonic()
    with state.pool.connection() as conn:
        try:
            sim.register(conn)
        except fleet.SimulationError as err:
            raise click.ClickException(str(err)) from err
        # The past days' GPU samples land in their own partitions, not in the default one until
        # the server's task moves them.
        history.ensure(conn, datetime.now(timezone.utc), int(state.config["GPU_HISTORY_RAW_DAYS"]),
                       int(state.config["GPU_HISTORY_HOURLY_DAYS"]))
        with click.progressbar(length=sim.slots, label="reporting") as bar:
            counts = sim.history(conn, progress=bar.update)
        click.echo(f"{clients} clients of user {user!r}: {counts['stored']} reports stored, "
                   f"{counts['duplicates']} duplicates, in {time.monotonic() - began:.1f} s")
        if follow:
            click.echo(f"reporting live every {sim.interval} s; Ctrl-C to stop")
            try:
                sim.live(conn)
            except KeyboardInterrupt:
                click.echo("stopped")


@gpufs_cli.command("prune")
@click.option("--older-than", "older_than", type=click.IntRange(1), default=None,
              help="Age in days [default: HEARTBEAT_RETENTION_DAYS].")
def prune_command(older_than):
    """Delete raw heartbeats older than the retention period, in bounded batches; daily rollups stay.
    Per-GPU samples and their hourly rollups go by whole partitions past GPU_HISTORY_*_DAYS."""
    from datetime import datetime, timezone

    from . import fleet, history
    state = current_app.extensions["gpufs"]
    retention = int(state.config["HEARTBEAT_RETENTION_DAYS"])
    with state.pool.connection() as conn:
        done = fleet.prune(conn, older_than or retention, retention)
        dropped = history.drop(conn, datetime.now(timezone.utc), int(state.config["GPU_HISTORY_RAW_DAYS"]),
                               int(state.config["GPU_HISTORY_HOURLY_DAYS"]))
    click.echo(f"pruned {done['heartbeats']} heartbeats and {done['buckets']} bucket claims "
               f"older than {done['cutoff']:%Y-%m-%dT%H:%M:%SZ}")
    click.echo(f"dropped {len(dropped)} GPU history partitions" + (f": {', '.join(dropped)}" if dropped else ""))
