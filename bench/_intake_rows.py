"""What bench/intake.py checks its runs against: the rows each filing brought, the API's and the baseline's."""

from pathlib import Path


def rows_per_incident(db_path: Path, created_by: str) -> dict[str, float]:
    """Rows each incident of `created_by` brought with it, to show the baseline writes what the API writes."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        (user_id,) = con.execute("SELECT id FROM users WHERE username = ?", (created_by,)).fetchone()
        (count,) = con.execute("SELECT count(*) FROM incidents WHERE created_by_id = ?", (user_id,)).fetchone()
        out = {"incidents": count}
        # The filing's own rows; its `incident.created` event is the foundation's, later events are the work it
        # causes (playbook runs, pages), which extra_rows_per_incident reports and the baseline does not model.
        for table, where in (("observables", ""), ("participants", ""), ("occurrences", ""),
                             ("events", " AND kind = 'incident.created'")):  # fmt: skip
            (n,) = con.execute(
                f"SELECT count(*) FROM {table} WHERE incident_id IN "
                f"(SELECT id FROM incidents WHERE created_by_id = ?){where}",
                (user_id,),
            ).fetchone()
            out[table] = round(n / count, 3) if count else 0.0
        return out
    finally:
        con.close()


def extra_rows_per_incident(db_path: Path, created_by: str) -> dict[str, float]:
    """Rows the filing transaction adds beyond the foundation's (playbooks, pages, deadline clocks, jobs)."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        (user_id,) = con.execute("SELECT id FROM users WHERE username = ?", (created_by,)).fetchone()
        mine = "incident_id IN (SELECT id FROM incidents WHERE created_by_id = ?)"
        (count,) = con.execute("SELECT count(*) FROM incidents WHERE created_by_id = ?", (user_id,)).fetchone()
        out = {}
        for table, where in (("events", " AND kind <> 'incident.created'"), ("jobs", ""), ("pages", ""),
                             ("deadline_clocks", "")):  # fmt: skip
            (n,) = con.execute(f"SELECT count(*) FROM {table} WHERE {mine}{where}", (user_id,)).fetchone()
            out[table] = round(n / count, 3) if count else 0.0
        return out
    finally:
        con.close()
