"""The STIX projector inside the worker: one leader (PostgreSQL advisory lock) turns new events into objects."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from app.api.stix import stix_settings
from incidents.stix import projector
from incidents.stix.store import StixSettings

log = logging.getLogger("ucsc.stix.projector")
# Events per projector batch. A batch that is not full means the projector has caught up: it then waits one
# poll interval, so that the incidents filed meanwhile share write transactions (projector.WRITE_ROWS) instead
# of each taking SQLite's write lock, which intake waits for, on its own.
BATCH = 200


async def run(worker: Any) -> None:
    """Project until cancelled; idle polls are one indexed read."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="ucsc-stix")
    settings = stix_settings(worker.app.config)
    leader: Any = None
    try:
        while True:
            try:
                if worker.engine.dialect.name == "postgresql" and leader is None:
                    leader = await loop.run_in_executor(pool, _lead, worker.engine)
                    if leader is None:
                        await asyncio.sleep(max(worker.poll * 10, 1.0))
                        continue
                done = await loop.run_in_executor(pool, _batch, worker, settings)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("projection failed; retrying")
                done = 0
                await asyncio.sleep(1)
            if done < BATCH:
                await asyncio.sleep(worker.poll)
    finally:
        if leader is not None:
            leader.close()
        pool.shutdown(wait=False, cancel_futures=True)


def _lead(engine: Any) -> Any:
    """A connection holding the projector's session advisory lock, or None when another worker holds it."""
    conn = engine.connect()
    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": projector.PROJECTOR_LOCK_KEY}).scalar()
    conn.commit()
    if got:
        log.info("this worker leads the STIX projection")
        return conn
    conn.close()
    return None


def _batch(worker: Any, settings: StixSettings) -> int:
    with worker.sessions() as session:
        return projector.project_pending(session, settings, batch=BATCH)
