"""The ``routing-persistence`` command line (``docs/contract.md`` §5): options in, one call out.

Each command builds :class:`~consumer.settings.Settings` once (environment, then the global
flags) and runs one coroutine of the module that owns the concept; its return value is the
exit code: 0 success, 1 failure (or a ``lag`` threshold exceeded), 2 bad usage or configuration,
130 interrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

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
dlq_app = typer.Typer(help="Work with the dead-letter topic.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract as JSON Schema.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")

#: --since/--until: a date, a date and time (UTC), or RFC 3339 with an offset or Z.
_TIMES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
_TIMES.append("%Y-%m-%dT%H:%M:%S.%f%z")
_SINCE_HELP = "Records at or after this time (UTC unless an offset is given)."
_Since = Annotated[datetime | None, typer.Option(help=_SINCE_HELP, formats=_TIMES)]
_Until = Annotated[datetime | None, typer.Option(help="Skip records after it.", formats=_TIMES)]
_DryRun = Annotated[bool, typer.Option("--dry-run", help="Change nothing; say what would be.")]


def _exit(ctx: typer.Context, command: Any, **options: Any) -> NoReturn:
    """Run ``command(settings, **options)`` and exit with the code it returns."""
    coroutine: Coroutine[Any, Any, int] = command(ctx.obj, **options)
    raise typer.Exit(asyncio.run(coroutine))


def _env(name: str) -> Any:
    return typer.Option(help=f"Overrides ROUTING_{name}.", show_default=False)


@app.callback()
def _main(
    ctx: typer.Context,
    bootstrap_servers: Annotated[str | None, _env("KAFKA_BOOTSTRAP_SERVERS")] = None,
    database_url: Annotated[str | None, _env("DATABASE_URL")] = None,
    group_id: Annotated[str | None, _env("GROUP_ID")] = None,
    metrics_port: Annotated[int | None, _env("METRICS_PORT (0 turns it off)")] = None,
) -> None:
    """Global options, before the command: each overrides its ROUTING_* variable."""
    given: dict[str, Any] = {"kafka_bootstrap_servers": bootstrap_servers, "group_id": group_id}
    given |= {"database_url": database_url, "metrics_port": metrics_port}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
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
    _exit(ctx, run_service)


@app.command()
def migrate(
    ctx: typer.Context,
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL for a DBA instead.")] = False,
    from_revision: Annotated[str | None, typer.Option(help="With --sql: start here.")] = None,
    lock_timeout_ms: Annotated[
        int | None, typer.Option(min=1, max=600_000, help="ROUTING_MIGRATE_LOCK_TIMEOUT_MS")
    ] = None,
) -> None:
    """Bring the database to the newest migration; each lock wait is bounded and retried.

    Exit 1 when the locks stayed unavailable or the database refused (nothing half-applied).
    """
    from consumer.ops.migrate import migrate

    _exit(ctx, migrate, sql=sql, from_revision=from_revision, lock_timeout_ms=lock_timeout_ms)


@app.command()
def replay(
    ctx: typer.Context,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    since: _Since = None,
    until: _Until = None,
    topic: Annotated[list[str] | None, typer.Option(help="Only this topic (repeatable).")] = None,
    partition: Annotated[list[int] | None, typer.Option(help="Only this partition.")] = None,
    dry_run: _DryRun = False,
) -> None:
    """Re-read topics into the database through run's path, up to today's end offsets.

    No consumer group: the main group's offsets never move. Dead letters carry
    dlq.group=<group>.replay. Exit 1 failed part-way (rerunning is harmless), 2 bad usage.
    """
    from consumer.ops.replay import replay_topics
    from consumer.runtime import tune_garbage_collector

    if from_beginning == (since is not None):
        typer.echo("replay: give exactly one of --from-beginning or --since", err=True)
        raise typer.Exit(2)
    tune_garbage_collector()
    options = {"since": since, "until": until, "topics": topic, "partitions": partition}
    _exit(ctx, replay_topics, dry_run=dry_run, **options)


@app.command()
def lag(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    max_lag: Annotated[int | None, typer.Option(help="Exit 1 over N records in all.")] = None,
    max_lag_seconds: Annotated[float | None, typer.Option(help="Exit 1 over S s.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
) -> None:
    """Per partition: committed offset, end offset, lag, lag in seconds (exit 2: no Kafka)."""
    from consumer.ops.lag import show_lag

    limits = {"max_lag": max_lag, "max_lag_seconds": max_lag_seconds}
    _exit(ctx, show_lag, as_json=as_json, watch=watch, **limits)


@app.command()
def held(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    max_age: Annotated[
        float | None, typer.Option(min=0, help="Exit 1 when the oldest is older (s).")
    ] = None,
) -> None:
    """Snapshots and costs held until their ExecutionRecord row exists (exit 2: no database)."""
    from consumer.ops.held import show_held

    _exit(ctx, show_held, as_json=as_json, max_age_s=max_age)


@dlq_app.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    reason: Annotated[list[str] | None, typer.Option(help="Only this reason (repeatable).")] = None,
    since: _Since = None,
    limit: Annotated[int | None, typer.Option(help="At most N records.")] = None,
    dry_run: _DryRun = False,
) -> None:
    """Publish dead letters back to their topics with their key, bytes and headers.

    At least once (rerunning is harmless); an event is redriven at most 3 times.
    """
    from consumer.ops.redrive import redrive

    _exit(ctx, redrive, reasons=reason, since=since, limit=limit, dry_run=dry_run)


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="About how many records.")] = 5000,
    rate: Annotated[float, typer.Option(help="Records per second (0: at once).")] = 2500.0,
    seed: Annotated[int, typer.Option(help="The same seed sends the same records.")] = 7,
    publish_only: Annotated[bool, typer.Option("--publish-only", help="Only publish.")] = False,
) -> None:
    """make run: topics, migrate, a consumer in this process, sample traffic, a checked summary."""
    from consumer.demo.run import run

    _exit(ctx, run, events=events, rate=rate, seed=seed, publish_only=publish_only)


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="Where to write.")]) -> None:
    """Write the JSON Schema (draft 2020-12) of the envelope and of each payload; exit 1: I/O."""
    from schemas.export import export_json_schemas

    try:
        written = export_json_schemas(directory)
    except OSError as exc:
        typer.echo(f"schemas export: cannot write to {directory}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    for path in written:
        typer.echo(str(path))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
