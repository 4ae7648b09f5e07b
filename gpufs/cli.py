"""`flask --app app gpufs ...` commands."""
import click
from flask import current_app
from flask.cli import AppGroup

gpufs_cli = AppGroup("gpufs", help="gpuf-s server administration.")


@gpufs_cli.command("migrate")
def migrate_command():
    """Apply pending database migrations."""
    from .migrate import migrate
    cfg = current_app.extensions["gpufs"].config
    applied = migrate(cfg["DATABASE_URL"], int(cfg["DB_CONNECT_TIMEOUT"]))
    click.echo("applied: " + (", ".join(applied) if applied else "nothing, schema is current"))


def _register_subgroups():
    from .tokens_cli import token_cli
    gpufs_cli.add_command(token_cli)


_register_subgroups()
