"""The round statements: one per table, a whole batch's candidates in one set-based statement.

Built once, from the definitions of :mod:`consumer.tables`. A statement takes, per row, ``$1``
the row key, ``$2`` the candidates' tenant, then per field of the table four columns:
occurredAt, eventId, the whole record's text and the payload's text (NULLs where the row has no
candidate for that field; of a candidate's two texts one is NULL, see
:class:`.columns.PendingEvent`). Every column is one ``bytea`` parameter, not an array that
asyncpg would encode element by element (Python work per element, a microsecond for a
``datetime``):

* the JSON texts: UTF-8, joined by :data:`SEPARATOR`, NULL as an empty text (no JSON text is
  empty);
* keys, tenants, eventIds and occurredAt: a PostgreSQL array literal (:func:`.statement.literal`),
  occurredAt as integer microseconds since 1970-01-01 UTC, turned back into a ``timestamptz``
  here by exact integer arithmetic (``to_timestamp`` of whole seconds, plus the microseconds).

It returns a row only for what the caller cannot take for granted: a row whose candidates
were all written as offered, into a row of their own tenant, comes back not at all (most rows;
decoding and settling a row each cost the caller more than the rest of its work). A row comes
back as ``(key, found, tenant, written, tenant_after, pass_1, lost_1[, pass_2, lost_2])`` when a
candidate failed the guards, was not the row's value afterwards, or the row's tenant after the
statement is not the candidates' (a row without a tenant keeps none):

* ``found``, ``tenant``: whether the row existed before the statement, and its tenant then;
* ``written``, ``tenant_after``: whether the statement wrote the row, and its tenant after;
* ``pass_n``: whether field n's candidate passed the guards (NULL: no candidate for field n);
* ``lost_n``: it passed, yet is not the row's value afterwards: a concurrent writer won, and
  the caller offers it again in the next round (NULL: no candidate).

``"ExecutionRecord"`` has two statements: :data:`ROUND_SQL` creates a missing row with its key
columns (``ROUTING_MISSING_ROW_POLICY=create``); :data:`PARK_ROUND_SQL` never inserts, and a
candidate whose row is missing comes back not written with ``found`` false, to be held.

Guards, per field: the row's tenant is null or the candidate's (tenant isolation), and the
stored version ``(occurredAt, eventId)`` is null or older (convergence). They are decided first
against the row as it was (CTE ``c``: only candidates that pass are parsed as JSON, so a replay
of stale records parses nothing) and re-checked by the write on the row as it is now, which
keeps concurrent consumers correct. Every join is a key lookup.
"""

from __future__ import annotations

from typing import Final

from consumer.tables import EXECUTION_RECORD, TENANT, JsonField, TargetTable

__all__ = ["PARK_ROUND_SQL", "ROUND_SQL", "SEPARATOR", "round_sql"]

#: Between the JSON texts of a column: the unit separator, a control character no JSON text
#: holds (JSON escapes it in strings, and allows none outside them).
SEPARATOR: Final = b"\x1f"


def _q(name: str) -> str:
    return f'"{name}"'


def _stored(raw: str, payload: str) -> str:
    # The stored JSON of a candidate: its payload text, or its record's payload. coalesce
    # evaluates its second argument only when the first is NULL: one text is parsed, never both.
    return f"coalesce({payload}::jsonb, ({raw}::jsonb) -> 'payload')"


def _newer(row: str, field: JsonField, occurred: str, event_id: str) -> str:
    # The stored version is null or older than (occurred, event_id). coalesce elsewhere turns a
    # null comparison (a foreign writer's null eventId) into "not newer".
    at, eid = _q(field.occurred_at), _q(field.event_id)
    return f"({row}.{at} IS NULL OR ({row}.{at}, {row}.{eid}) < ({occurred}, {event_id}))"


def _array(param: str, element: str) -> str:
    # A column sent as an array literal (module docstring); array_in checks it as PostgreSQL
    # checks any input of the type. convert_from's text has the collation "C" (that of its
    # `name` argument), and an index on a key column of the default collation cannot serve a
    # comparison in "C": keys and tenants take the default collation, as a text[] parameter has.
    collation = ' COLLATE "default"' if element == "text" else ""
    return f"convert_from({param}::bytea, 'UTF8')::{element}[]{collation}"


def _moment(micros: str) -> str:
    # Microseconds since the Unix epoch as a timestamptz, exactly: to_timestamp takes a float8,
    # exact for whole seconds (|s| * 10^6 needs at most 53 bits in every year 0001-9999); the
    # rest is an exact interval of whole microseconds. NULL stays NULL.
    return (
        f"to_timestamp(({micros} / 1000000)::float8)"
        f" + ({micros} % 1000000) * interval '1 microsecond'"
    )


def _inputs(width: int) -> str:
    # The statement's inputs as rows (k, t, o1, e1, raw1, pl1[, o2, ...]), from its parameters.
    arrays = [_array("$1", "text"), _array("$2", "text")]
    columns, moments = ["k", "t"], ["k", "t"]
    for n in range(1, width + 1):
        first = 3 + 4 * (n - 1)
        arrays += [
            _array(f"${first}", "int8"),
            _array(f"${first + 1}", "uuid"),
            _texts(f"${first + 2}"),
            _texts(f"${first + 3}"),
        ]
        columns += [f"m{n}", f"e{n}", f"raw{n}", f"pl{n}"]
        moments += [f"{_moment(f'm{n}')} AS o{n}", f"e{n}", f"raw{n}", f"pl{n}"]
    return (
        f"SELECT {', '.join(moments)}\n"
        f"    FROM unnest({', '.join(arrays)})\n"
        f"        AS u({', '.join(columns)})"
    )


def _texts(param: str) -> str:
    # A column of texts sent as one bytea (module docstring). convert_from checks the UTF-8, as
    # PostgreSQL checks a text parameter; unnest pads a shorter array with NULLs, so the one
    # case string_to_array reads as no element (a single NULL: '') still lines up.
    return f"string_to_array(convert_from({param}::bytea, 'UTF8'), E'\\x{SEPARATOR[0]:02x}', '')"


def _lost(n: int, stored_event_id: str) -> str:
    # Passed the guards, yet the row (u: as the statement left it; NULL when it did not write
    # the row) does not hold it: a concurrent writer won.
    return f"(c.pass{n} AND {stored_event_id} IS DISTINCT FROM c.e{n})"


def _reported(n: int, stored_event_id: str) -> str:
    # pass_n and lost_n of the returned row; NULL where the row had no candidate for field n,
    # so that the reports of a row split into its two records merge field by field.
    offered = f"c.o{n} IS NOT NULL"
    return (
        f"CASE WHEN {offered} THEN c.pass{n} END, "
        f"CASE WHEN {offered} THEN {_lost(n, stored_event_id)} END"
    )


def _exceptional(n: int, stored_event_id: str) -> str:
    # Field n's candidate was not written as offered: refused by the guards, or lost.
    return f"((c.o{n} IS NOT NULL AND NOT c.pass{n}) OR {_lost(n, stored_event_id)})"


def _columns(field: JsonField) -> tuple[str, str, str]:
    return _q(field.column), _q(field.occurred_at), _q(field.event_id)


def _execution_record_sql(table: TargetTable, *, creates_rows: bool) -> str:
    snapshot, cost = table.fields
    key, tenant = _q(table.key), _q(table.tenant or "")
    name = _q(table.name)

    def excluded_newer(field: JsonField) -> str:
        occurred, event_id = f"EXCLUDED.{_q(field.occurred_at)}", f"EXCLUDED.{_q(field.event_id)}"
        return f"({occurred} IS NOT NULL AND {_newer('r', field, occurred, event_id)})"

    def keep_or_take(field: JsonField) -> str:
        guard = excluded_newer(field)
        return ", ".join(
            f"{c} = CASE WHEN {guard} THEN EXCLUDED.{c} ELSE r.{c} END" for c in _columns(field)
        )

    def passes(n: int, field: JsonField) -> str:
        # May field n's candidate be written into the row as it was before the statement? When
        # rows are not created, only into a row that exists.
        exists = "" if creates_rows else f"cur.{key} IS NOT NULL AND "
        return (
            f"(i.o{n} IS NOT NULL AND {exists}coalesce((cur.{tenant} IS NULL OR cur.{tenant} = i.t)"
            f" AND {_newer('cur', field, f'i.o{n}', f'i.e{n}')}, false)) AS pass{n}"
        )

    def update_guard(n: int, field: JsonField) -> str:
        return f"(c.pass{n} AND {_newer('r', field, f'c.o{n}', f'c.e{n}')})"

    def update_field(n: int, field: JsonField) -> str:
        values = (_stored(f"c.raw{n}", f"c.pl{n}"), f"c.o{n}", f"c.e{n}")
        guard = update_guard(n, field)
        return ", ".join(
            f"{c} = CASE WHEN {guard} THEN {v} ELSE r.{c} END"
            for c, v in zip(_columns(field), values, strict=True)
        )

    def inserted(n: int) -> str:
        values = (_stored(f"c.raw{n}", f"c.pl{n}"), f"c.o{n}", f"c.e{n}")
        return ", ".join(f"CASE WHEN c.pass{n} THEN {v} END" for v in values)

    def reported(n: int, field: JsonField) -> str:
        return _reported(n, f"u.{_q(field.event_id)}")

    def exceptional(n: int, field: JsonField) -> str:
        return _exceptional(n, f"u.{_q(field.event_id)}")

    returned = f"r.{key}, r.{tenant}, r.{_q(snapshot.event_id)}, r.{_q(cost.event_id)}"
    insert_columns = ", ".join(c for f in (snapshot, cost) for c in _columns(f))
    # Under park nothing is inserted: a missing row's candidates come back not written.
    insert = f"""
), ins AS (
    INSERT INTO {name} AS r ("id", {key}, {tenant}, {insert_columns})
    SELECT c.k, c.k, c.t, {inserted(1)}, {inserted(2)}
    FROM c WHERE NOT c.found AND (c.pass1 OR c.pass2)
    ON CONFLICT ({key}) DO UPDATE SET {keep_or_take(snapshot)}, {keep_or_take(cost)}
    WHERE (r.{tenant} IS NULL OR r.{tenant} = EXCLUDED.{tenant})
        AND ({excluded_newer(snapshot)} OR {excluded_newer(cost)})
    RETURNING {returned}"""
    if not creates_rows:
        insert = ""
    inserted_rows = " UNION ALL SELECT * FROM ins" if creates_rows else ""
    return f"""
WITH i AS (
    {_inputs(2)}
), c AS (
    SELECT i.*, (cur.{key} IS NOT NULL) AS found, cur.{tenant} AS cur_t,
        {passes(1, snapshot)}, {passes(2, cost)}
    FROM i LEFT JOIN {name} AS cur ON cur.{key} = i.k
), upd AS (
    UPDATE {name} AS r SET {update_field(1, snapshot)}, {update_field(2, cost)}
    FROM c
    WHERE c.found AND (c.pass1 OR c.pass2) AND r.{key} = c.k
        AND (r.{tenant} IS NULL OR r.{tenant} = c.t)
        AND ({update_guard(1, snapshot)} OR {update_guard(2, cost)})
    RETURNING {returned}{insert}
), up AS (
    SELECT * FROM upd{inserted_rows}
)
SELECT c.k, c.found, c.cur_t, u.{key} IS NOT NULL, u.{tenant},
    {reported(1, snapshot)}, {reported(2, cost)}
FROM c LEFT JOIN up AS u ON u.{key} = c.k
WHERE {exceptional(1, snapshot)} OR {exceptional(2, cost)}
    OR (u.{key} IS NOT NULL AND u.{tenant} IS DISTINCT FROM c.t)
"""


def _tenant_sql(table: TargetTable) -> str:
    (policy,) = table.fields
    key, name = _q(table.key), _q(table.name)
    column, at, eid = _columns(policy)
    return f"""
WITH i AS (
    {_inputs(1)}
), c AS (
    SELECT i.k, i.o1, i.e1, i.raw1, i.pl1, (cur.{key} IS NOT NULL) AS found,
        (cur.{key} IS NOT NULL AND coalesce({_newer("cur", policy, "i.o1", "i.e1")}, false))
            AS pass1
    FROM i LEFT JOIN {name} AS cur ON cur.{key} = i.k
), up AS (
    UPDATE {name} AS r
    SET {column} = {_stored("c.raw1", "c.pl1")}, {at} = c.o1, {eid} = c.e1
    FROM c
    WHERE c.pass1 AND r.{key} = c.k AND {_newer("r", policy, "c.o1", "c.e1")}
    RETURNING r.{key}, r.{eid}
)
SELECT c.k, c.found, NULL::text, u.{key} IS NOT NULL, NULL::text, {_reported(1, f"u.{eid}")}
FROM c LEFT JOIN up AS u ON u.{key} = c.k
WHERE {_exceptional(1, f"u.{eid}")}
"""


#: The round statement of each table this service writes (missing rows created).
ROUND_SQL: Final = {
    EXECUTION_RECORD.name: _execution_record_sql(EXECUTION_RECORD, creates_rows=True),
    TENANT.name: _tenant_sql(TENANT),
}
#: The same, never creating a row (``park``): "Tenant" rows are never created anyway.
PARK_ROUND_SQL: Final = {
    EXECUTION_RECORD.name: _execution_record_sql(EXECUTION_RECORD, creates_rows=False),
    TENANT.name: ROUND_SQL[TENANT.name],
}


def round_sql(table: TargetTable, *, creates_rows: bool = True) -> str:
    """The round statement of ``table`` (see the module docstring for its parameters)."""
    return (ROUND_SQL if creates_rows else PARK_ROUND_SQL)[table.name]
