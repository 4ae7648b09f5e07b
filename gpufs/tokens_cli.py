"""`flask --app app gpufs token create|list|revoke`: manage API keys for AUTH_MODE=token."""
import time

import click
from flask import current_app
from flask.cli import AppGroup

from .auth import ADMIN_LEVEL, hash_key, new_key
from .db import queries

token_cli = AppGroup("token", help="Manage API keys (the tokens table).")


def _pool():
    return current_app.extensions["gpufs"].pool


@token_cli.command("create")
@click.option("--user", "user_id", type=int, required=True, help="Numeric user id the key acts for.")
@click.option("--admin", is_flag=True, help="May act for every user and manage models.")
@click.option("--expires", "days", type=click.IntRange(min=1), help="Days until the key expires (default never).")
def create(user_id, admin, days):
    """Create a key; it is printed once and stored only as a hash."""
    key, public_id = new_key()
    expired = int(time.time()) + days * 86400 if days else -1
    with _pool().connection() as conn, conn:
        row = queries.token_create(conn, user_id=user_id, public_id=public_id, key_hash=hash_key(key),
                                   expired_time=expired, access_level=ADMIN_LEVEL if admin else 1)
    click.echo(f"id {row['id']}: {key}")
    click.echo("Store this key now: it is not shown again.", err=True)


@token_cli.command("list")
def list_keys():
    """List keys that are not deleted (never their secrets)."""
    with _pool().connection() as conn:
        rows = list(queries.token_list(conn))
        conn.rollback()
    for r in rows:
        expires = "never" if r["expired_time"] in (None, -1) else time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["expired_time"]))
        level = "admin" if r["access_level"] == ADMIN_LEVEL else "user"
        state = "active" if r["status"] in (None, 1) else "disabled"
        click.echo(f"{r['id']}\tuser {r['user_id']}\t{level}\t{state}\texpires {expires}")


@token_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke(token_id):
    """Revoke a key by id; servers stop accepting it within AUTH_CACHE_SECONDS."""
    with _pool().connection() as conn, conn:
        row = queries.token_revoke(conn, id=token_id)
    if row is None:
        raise click.ClickException(f"no active key with id {token_id}")
    click.echo(f"revoked {token_id}")
