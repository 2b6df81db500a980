"""The statements of the filing path, each built once: building and cache-keying a statement costs more than SQLite
takes to run it (bench/intake.py), and a repeat or a filing runs them by the thousand."""

import json
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, case, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from incidents.access import Actor, visible_incidents
from incidents.models import IdempotencyKey, Incident, Organisation, RefCounter


@cache
def bump_counter_and_give_refs() -> Any:
    """PostgreSQL: this local year's counter bumped by `count` (the row is created by a year's first filing, and
    stays locked to the commit), and the incidents `ids`, in that order, given the references it hands out, in
    place of their `placeholders` in the row and in its folded search text. Numbers keep at least five digits, as
    `filing._allocate_refs` writes them."""
    return text(
        """
        WITH counter AS (
            INSERT INTO ref_counters (prefix, year, value) VALUES (:prefix, :year, :count)
            ON CONFLICT (prefix, year) DO UPDATE SET value = ref_counters.value + EXCLUDED.value
            RETURNING value
        ), given AS (
            SELECT t.id, t.placeholder, (counter.value - :count + t.n)::text AS number
            FROM counter, unnest(CAST(:ids AS bigint[]), CAST(:placeholders AS text[])) WITH ORDINALITY
                AS t(id, placeholder, n)
        )
        UPDATE incidents
        SET ref = :prefix || '-' || :year || '-' || lpad(given.number, greatest(5, length(given.number)), '0'),
            search_text = replace(incidents.search_text, given.placeholder,
                                  :folded || lpad(given.number, greatest(5, length(given.number)), '0'))
        FROM given WHERE incidents.id = given.id
        RETURNING incidents.id, incidents.ref
        """
    )


@cache
def ref_counter_upsert(dialect: str) -> Any:
    """One statement: the first filing of a year creates the counter row, every later one bumps it (row-locked)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    table = RefCounter.__table__
    return (
        upsert(table)
        .values(prefix=bindparam("prefix"), year=bindparam("year"), value=bindparam("count"))
        .on_conflict_do_update(index_elements=["prefix", "year"], set_={"value": table.c.value + bindparam("count")})
        .returning(table.c.value)
    )


def one_of(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the list bound as `name` (see `listed`): one parameter however long the list, so the
    statement's SQL is the same at every execution. An expanding IN is rendered anew at each one (3 % of an alert
    repeat's web CPU in a shared transaction's dedup read and count update, py-spy) and, on SQLite, prepared anew
    for each length of list."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    values = select(literal_column("value")).select_from(func.json_each(bindparam(name)))
    return column.in_(values)


def listed(values: Sequence[Any], dialect: str) -> Any:
    """The value of a list parameter of `one_of`: an array for PostgreSQL, a JSON array for SQLite's json_each."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


@cache
def count_occurrences(dialect: str) -> Any:
    """Add `n` occurrences to each incident of `ids` (a `listed` parameter): their counts after it."""
    table = Incident.__table__
    return (
        update(table)
        .where(one_of(table.c.id, "ids", dialect))
        .values(updated_at=bindparam("at"), occurrence_count=table.c.occurrence_count + bindparam("n"))
        .returning(table.c.id, table.c.occurrence_count)
    )


@cache
def idempotency_row() -> Any:
    return select(IdempotencyKey).where(
        IdempotencyKey.token_id == bindparam("token_id"), IdempotencyKey.key == bindparam("key")
    )


@lru_cache(maxsize=1024)
def open_dedup_query(actor: Actor, dialect: str) -> Any:
    """The open incidents holding any of the `scopes` (a `listed` parameter), each with whether `actor` may see it
    (per actor, like visible_incidents: the clause depends on the actor's fields alone)."""
    return select(
        Incident.id, Incident.ref, Incident.status, Incident.tlp, Incident.open_dedup_key,
        case((visible_incidents(actor), True), else_=False).label("seen"),
    ).where(one_of(Incident.open_dedup_key, "scopes", dialect))  # fmt: skip


@cache
def organisation_id_by_code() -> Any:
    organisations = Organisation.__table__
    return select(organisations.c.id).where(organisations.c.code == bindparam("code"))


@cache
def insert_rows(table: Table) -> Any:
    """A Core INSERT of `table`: its rows are keyed by column name (`class`, not `incident_class`)."""
    return insert(table)


@cache
def insert_incidents_returning_ids() -> Any:
    table = Incident.__table__
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)
