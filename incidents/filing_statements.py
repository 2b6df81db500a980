"""The statements of the filing path, each built once: building and cache-keying a statement costs more than SQLite
takes to run it (bench/intake.py), and a repeat or a filing runs them by the thousand."""

from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, case, insert, select, text, update

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


@cache
def count_occurrences() -> Any:
    """Add `n` occurrences to each incident of `ids`: their counts after it."""
    table = Incident.__table__
    return (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)))
        .values(updated_at=bindparam("at"), occurrence_count=table.c.occurrence_count + bindparam("n"))
        .returning(table.c.id, table.c.occurrence_count)
    )


@cache
def idempotency_row() -> Any:
    return select(IdempotencyKey).where(
        IdempotencyKey.token_id == bindparam("token_id"), IdempotencyKey.key == bindparam("key")
    )


@lru_cache(maxsize=1024)
def open_dedup_query(actor: Actor, one_key: bool) -> Any:
    """The open incidents holding any of the `scopes`, each with whether `actor` may see it (per actor, like
    visible_incidents: the clause depends on the actor's fields alone). One key's two scopes are two plain
    parameters: an expanding IN is rendered anew at every execution (9 % of an alert repeat's CPU on PostgreSQL,
    py-spy); a batch's keys use it."""
    scopes = [bindparam("s0"), bindparam("s1")] if one_key else bindparam("scopes", expanding=True)
    return select(
        Incident.id, Incident.ref, Incident.status, Incident.tlp, Incident.open_dedup_key,
        case((visible_incidents(actor), True), else_=False).label("seen"),
    ).where(Incident.open_dedup_key.in_(scopes))  # fmt: skip


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
