"""The worker's silence watch over alert sources; the page to the standing body goes through paging."""

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from incidents.filing import FilingSettings
from incidents.models import Incident
from incidents.sources import silence
from incidents.sources.models import Source
from incidents.sources.windows import ts
from playbooks import paging
from playbooks.settings import Settings

log = logging.getLogger("ucsc.sources")


def pager(config: dict[str, Any]) -> silence.Pager:
    """Page the standing body (UCSC_STANDING_BODY) about a silent source: one page per silence (its key)."""

    def page(session: Session, incident: Incident, source: Source) -> None:
        code = config.get("STANDING_BODY")
        if not code:
            return
        paging.create_page(
            session,
            incident=incident,
            body={
                "organisation": code,
                "reason_vi": f"Nguồn cảnh báo {source.name} im lặng quá {source.expected_interval_seconds} giây",
                "reason_en": f"Alert source {source.name} silent past {source.expected_interval_seconds} s",
            },
            run=None,
            path=None,
            settings=Settings.from_config(config),
            key=f"source-silent:{source.id}:{ts(source.silent_since)}",
        )

    return page


def check_once(sessions: Any, config: dict[str, Any], now: datetime | None = None) -> list[int]:
    """One pass of the watch in its own session: the ids of the sources this pass found silent."""
    settings = FilingSettings(
        ref_prefix=config["REF_PREFIX"], standing_body=config["STANDING_BODY"],
        receipts_by_email=bool(config.get("SMTP_URL")),
    )  # fmt: skip
    with sessions() as session:
        actor = silence.watch_actor(
            session, username=str(config.get("SOURCE_WATCH_USER") or "source-watch"),
            organisation=str(config["STANDING_BODY"]),
        )  # fmt: skip
        return silence.check(session=session, actor=actor, settings=settings, page=pager(config), now=now)


async def run(worker: Any) -> None:
    """Check every UCSC_SOURCE_WATCH_SECONDS until cancelled; a failed pass is logged and tried again."""
    every = float(worker.app.config.get("SOURCE_WATCH_SECONDS", 30))
    loop = asyncio.get_running_loop()
    while True:
        try:
            found = await loop.run_in_executor(worker.pool, check_once, worker.sessions, worker.ctx.config)
            if found:
                log.warning("alert sources silent: %s", found)
                worker.wake()  # the pages' deliveries are due now
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the silence watch failed; retrying")
        await asyncio.sleep(every)
