"""SQL builders shared by the additive revisions (frozen: revisions depend on their output).

Change nothing here that alters the SQL of a shipped revision; add a new builder instead. The
ownership marker is :data:`consumer.tables.ADDED_COLUMN_COMMENT_PREFIX`, whose value shipped
revisions wrote into the database: it never changes (``tests/test_migrations.py`` pins it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from consumer.tables import ADDED_COLUMN_COMMENT_PREFIX

__all__ = ["NewColumn", "add_columns_sql", "drop_added_columns_sql"]


class NewColumn(NamedTuple):
    """A nullable column without default; ``sql_type`` spelled as ``format_type()`` prints it."""

    name: str
    sql_type: str
    meaning: str


def _literal(text: str) -> str:
    """A SQL string literal (the values are constants of the revisions, never user input)."""
    return "'" + text.replace("'", "''") + "'"


def add_columns_sql(table: str, columns: Sequence[NewColumn]) -> str:
    """One ``DO`` block adding the missing ``columns`` to ``table`` in a single ``ALTER TABLE``.

    * A column that already exists with the same type is left alone and not marked as ours
      (Prisma may have added ``"routingSnapshot"``/``"actualCost"`` per the B6 design): ``ADD
      COLUMN IF NOT EXISTS`` semantics, plus ownership tracking.
    * A column that exists with another type fails the revision with a message naming it: the
      service could not write it correctly.
    * Only columns it added get the ``ADDED_COLUMN_COMMENT_PREFIX`` comment.

    Nullable and default-less, ``ADD COLUMN`` only updates the catalog (no table rewrite); the one
    ``ALTER TABLE`` takes the ``ACCESS EXCLUSIVE`` lock once, for milliseconds, under the
    revision's ``lock_timeout``. When nothing is missing it takes no lock at all.
    """
    specs = ",\n            ".join(
        f"({_literal(c.name)}, {_literal(c.sql_type)}, "
        f"{_literal(f'{ADDED_COLUMN_COMMENT_PREFIX}: {c.meaning}')})"
        for c in columns
    )
    return f"""
DO $additive$
DECLARE
    target regclass := to_regclass({_literal(f'"{table}"')});
    spec record;
    existing text;
    clauses text[] := ARRAY[]::text[];
    added_names text[] := ARRAY[]::text[];
    added_notes text[] := ARRAY[]::text[];
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'table % does not exist; run the baseline revision first',
            {_literal(table)};
    END IF;
    FOR spec IN
        SELECT * FROM (VALUES
            {specs}
        ) AS s(name, sql_type, note)
    LOOP
        SELECT format_type(a.atttypid, a.atttypmod) INTO existing
            FROM pg_attribute a
            WHERE a.attrelid = target AND a.attname = spec.name AND NOT a.attisdropped;
        IF existing IS NULL THEN
            clauses := clauses || format('ADD COLUMN %I %s', spec.name, spec.sql_type);
            added_names := added_names || spec.name;
            added_notes := added_notes || spec.note;
        ELSIF existing <> spec.sql_type THEN
            RAISE EXCEPTION 'column %.% exists with type %, expected %',
                {_literal(table)}, spec.name, existing, spec.sql_type;
        END IF;
    END LOOP;
    IF cardinality(clauses) > 0 THEN
        EXECUTE format('ALTER TABLE %s %s', target, array_to_string(clauses, ', '));
        FOR i IN 1 .. cardinality(added_names) LOOP
            EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', target, added_names[i], added_notes[i]);
        END LOOP;
    END IF;
END
$additive$
"""


def drop_added_columns_sql(table: str, names: Sequence[str]) -> str:
    """One ``DO`` block dropping those of ``names`` that an additive revision added to ``table``.

    A column without the ownership comment (it existed before the upgrade) stays. ``DROP
    COLUMN`` only updates the catalog; one ``ALTER TABLE`` takes the lock once.
    """
    array = "ARRAY[" + ", ".join(_literal(n) for n in names) + "]::text[]"
    marker = _literal(ADDED_COLUMN_COMMENT_PREFIX)
    return f"""
DO $additive$
DECLARE
    target regclass := to_regclass({_literal(f'"{table}"')});
    clauses text[];
BEGIN
    IF target IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(format('DROP COLUMN %I', a.attname) ORDER BY a.attnum) INTO clauses
        FROM pg_attribute a
        WHERE a.attrelid = target
          AND a.attname = ANY ({array})
          AND NOT a.attisdropped
          AND starts_with(col_description(a.attrelid, a.attnum), {marker});
    IF clauses IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s %s', target, array_to_string(clauses, ', '));
    END IF;
END
$additive$
"""
