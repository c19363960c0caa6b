"""The ``routing-persistence`` command line (``CONTRACT.md`` §5): a thin layer over the modules.

Each command builds :class:`~consumer.settings.Settings` once (environment, then flags), then calls
one coroutine of the module that owns the concept. Exit codes: 0 success, 1 failure or threshold
exceeded (``lag --max-lag``), 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from consumer.logs import configure_logging
from consumer.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="routing-persistence",
    help="Persist the routing engine's Kafka events into PostgreSQL, idempotently.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: Accepted by --since/--until: a date, a date and time (UTC), or RFC 3339 with an offset or Z.
_TIME_FORMATS = [
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
]
dlq_app = typer.Typer(help="Work with the dead-letter topic.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract as JSON Schema.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.callback()
def _main(
    ctx: typer.Context,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="Overrides ROUTING_KAFKA_BOOTSTRAP_SERVERS.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ROUTING_DATABASE_URL.", show_default=False)
    ] = None,
    group_id: Annotated[str | None, typer.Option(help="Overrides ROUTING_GROUP_ID.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Overrides ROUTING_METRICS_PORT (0 turns it off).")
    ] = None,
) -> None:
    """Global options: each overrides the ROUTING_* variable of the same meaning."""
    overrides: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "database_url": database_url,
        "group_id": group_id,
        "metrics_port": metrics_port,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        # hide_input_in_errors keeps values (and so secrets) out of this message.
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


@app.command()
def run(ctx: typer.Context) -> None:
    """Consume until SIGTERM/SIGINT, then finish the batch in hand, commit and exit 0."""
    from consumer.runtime import tune_garbage_collector
    from consumer.service.service import run_service

    tune_garbage_collector()
    raise typer.Exit(asyncio.run(run_service(_settings(ctx))))


@app.command()
def migrate(
    ctx: typer.Context,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL for a DBA instead of running it.")
    ] = False,
    from_revision: Annotated[
        str | None,
        typer.Option(help="With --sql: start from this revision (default: an empty database)."),
    ] = None,
    lock_timeout_ms: Annotated[
        int | None,
        typer.Option(help="Overrides ROUTING_MIGRATE_LOCK_TIMEOUT_MS (each DDL lock wait)."),
    ] = None,
) -> None:
    """Bring the database to the newest migration (Alembic ``upgrade head``); idempotent.

    Each revision waits at most the lock timeout for its table lock, then backs off and retries
    (ROUTING_MIGRATE_MAX_ATTEMPTS), so live traffic never queues behind it for longer.
    Exit 1 when the locks stayed unavailable or the database refused (nothing half-applied).
    """
    from consumer.errors import RoutingPersistenceError
    from consumer.ops.migrate import upgrade

    settings = _settings(ctx)
    if from_revision is not None and not sql:
        typer.echo("migrate: --from-revision only applies with --sql", err=True)
        raise typer.Exit(2)
    if lock_timeout_ms is not None:
        try:
            settings = Settings.model_validate(
                {**settings.model_dump(), "migrate_lock_timeout_ms": lock_timeout_ms}
            )
        except ValidationError as exc:
            typer.echo(f"configuration error: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        upgrade(settings, sql=sql, from_revision=from_revision)
    except RoutingPersistenceError as exc:
        typer.echo(f"migrate: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, (SQLAlchemyError, OSError)):
            raise
        # The driver's message names the statement, never the URL's password.
        typer.echo(f"migrate failed on {settings.redacted_database_url}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def replay(
    ctx: typer.Context,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at each partition's first offset.")
    ] = False,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Start at the first record at or after this time (UTC unless an offset is given).",
            formats=_TIME_FORMATS,
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(help="Ignore records stamped after this time.", formats=_TIME_FORMATS),
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="Only this topic (repeatable). Default: all three.")
    ] = None,
    partition: Annotated[
        list[int] | None, typer.Option(help="Only this partition (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count; write nothing.")
    ] = False,
) -> None:
    """Re-read topics into the database through the same apply path, up to today's end offsets.

    No consumer group: the main group's offsets never move; safe while `run` is live.

    Its dead letters carry dlq.group=<group>.replay.

    Exit 0 done, 1 failed part-way (running it again is harmless), 2 bad usage.
    """
    from consumer.ops.replay import replay_topics
    from consumer.runtime import tune_garbage_collector

    if from_beginning == (since is not None):
        typer.echo("replay: give exactly one of --from-beginning or --since", err=True)
        raise typer.Exit(2)
    tune_garbage_collector()
    raise typer.Exit(
        asyncio.run(
            replay_topics(
                _settings(ctx),
                since=since,
                until=until,
                topics=topic or None,
                partitions=partition or None,
                dry_run=dry_run,
            )
        )
    )


@app.command()
def lag(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    max_lag: Annotated[
        int | None, typer.Option(help="Exit 1 when the total lag exceeds N records.")
    ] = None,
    max_lag_seconds: Annotated[
        float | None, typer.Option(help="Exit 1 when any partition lags more than S seconds.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh a live table until interrupted.")
    ] = False,
) -> None:
    """Per topic and partition: committed offset, end offset, lag, lag in seconds.

    Exit 0 within thresholds, 1 over --max-lag (total) or --max-lag-seconds (any partition).

    Exit 2 when Kafka cannot be reached or a topic is missing.
    """
    from consumer.ops.lag import show_lag

    raise typer.Exit(
        asyncio.run(
            show_lag(
                _settings(ctx),
                as_json=as_json,
                max_lag=max_lag,
                max_lag_seconds=max_lag_seconds,
                watch=watch,
            )
        )
    )


@dlq_app.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    reason: Annotated[
        list[str] | None, typer.Option(help="Only dead letters with this reason (repeatable).")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Only dead letters written at or after this time (UTC unless an offset is given).",
            formats=_TIME_FORMATS,
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most N records.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be published; publish nothing.")
    ] = False,
) -> None:
    """Publish dead letters back to their original topics, with their original key and bytes.

    At least once: running it again republishes (harmless: the consumer is idempotent).

    Use --since to skip dead letters redriven before.

    An event is redriven at most 3 times (header dlq.redrive-count), then refused and listed.
    """
    from consumer.ops.redrive import redrive

    raise typer.Exit(
        asyncio.run(
            redrive(
                _settings(ctx), reasons=reason or None, since=since, limit=limit, dry_run=dry_run
            )
        )
    )


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write the *.json files into.")],
) -> None:
    """Write the JSON Schema (draft 2020-12) of the envelope and of each payload.

    Prints each path written; the folder is created if missing. ``envelope.schema.json`` alone
    validates a whole event. Exit 1 when the folder cannot be written.
    """
    from schemas.export import export_json_schemas

    try:
        written = export_json_schemas(directory)
    except OSError as exc:
        typer.echo(f"schemas export: cannot write to {directory}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    for path in written:
        typer.echo(str(path))


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="How many events to publish.")] = 2000,
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible).")] = 0.0,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed sends the same events.")
    ] = 7,
) -> None:
    """Publish realistic sample events (with duplicates, reordering and bad records)."""
    from consumer.demo.sample import run_demo

    raise typer.Exit(asyncio.run(run_demo(_settings(ctx), events=events, rate=rate, seed=seed)))


def main() -> None:
    """Console-script entry point."""
    app()
