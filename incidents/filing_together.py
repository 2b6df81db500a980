"""Filing the incidents of requests that share one write transaction (group commit, incidents/uow.py): each
request's filing answered as it would be alone, the filings of one filer written together."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from incidents.access import Actor
from incidents.errors import DomainError, ValidationFailed
from incidents.filing import (
    QUIET_FILING,
    FilingResult,
    FilingSettings,
    IdempotencyClaim,
    file_in_session,
    idempotent_replay,
    record_claims,
)
from incidents.policy import Capability, require
from incidents.schemas.incidents import IncidentCreate
from incidents.uow import RunAlone


@dataclass(frozen=True)
class Filing:
    """One request's incident, to be filed in a transaction it shares with others that arrived with it."""

    item: IncidentCreate
    actor: Actor
    settings: FilingSettings
    claim: IdempotencyClaim | None = None
    quiet: bool = False  # held by a maintenance window: stored and shown, paging nobody (QUIET_FILING)


def file_each(
    session: Session, filings: Sequence[Filing], then: Callable[[int, FilingResult], None] | None = None
) -> list[FilingResult | Exception]:
    """Each filing's answer, or its error, filed in the caller's write transaction: the filings of one filer go in
    together (one dedup read, one INSERT per table), in dedup-key order (two transactions opening incidents for
    the same keys take the keys' unique entries in the same order, and wait rather than deadlock).

    A filing refused before anything of it is written (a role that may not file, a key used with another body, a
    field naming what does not exist) gets its error and the others go on; one repeating a key an earlier filing
    here claims gets RunAlone: it runs once this transaction has committed, and is answered as a replay.
    `then(i, result)` runs for each filed before its key is stored."""
    outcomes: list[FilingResult | Exception | None] = [None] * len(filings)
    claimed: set[tuple[int, str]] = set()
    groups: dict[tuple[Actor, FilingSettings, bool], list[int]] = {}
    for i, filing in enumerate(filings):
        try:
            require(filing.actor, Capability.FILE_INCIDENT, "your role may not file incidents")
            if filing.claim is not None:
                key = (filing.claim.token_id, filing.claim.key)
                if key in claimed:
                    outcomes[i] = RunAlone(filing.claim.key)
                    continue
                claimed.add(key)
                outcomes[i] = idempotent_replay(session, filing.claim)
        except DomainError as exc:
            outcomes[i] = exc
        if outcomes[i] is None:
            groups.setdefault((filing.actor, filing.settings, filing.quiet), []).append(i)
    answered: list[tuple[IdempotencyClaim, FilingResult]] = []
    for (actor, settings, quiet), members in groups.items():
        members.sort(key=lambda i: filings[i].item.dedup_key or "")
        for filed_members, filed in _file_group(session, [filings[i].item for i in members], members, actor,
                                                settings, quiet, outcomes):  # fmt: skip
            for i, body in zip(filed_members, filed.bodies, strict=True):
                result = FilingResult(201 if body["created"] else 200, body, f"/api/v1/incidents/{body['id']}",
                                      incident_ids=[body["id"]], grouped_into=filed.grouped_into)  # fmt: skip
                if then is not None:
                    then(i, result)
                outcomes[i] = result
                if filings[i].claim is not None:
                    answered.append((filings[i].claim, result))  # type: ignore[arg-type]
    record_claims(session, answered)
    return outcomes  # type: ignore[return-value]


def _file_group(
    session: Session, items: list[IncidentCreate], members: list[int], actor: Actor, settings: FilingSettings,
    quiet: bool, outcomes: list[Any],
) -> list[tuple[list[int], FilingResult]]:  # fmt: skip
    """One filer's items filed together; if a field of one is refused (before anything is written), each is filed
    apart, so the refusal is that filing's alone."""
    if quiet:
        session.info[QUIET_FILING] = True
    try:
        try:
            return [(members, file_in_session(session, items, actor, settings, False, followup_each=True))]
        except ValidationFailed as exc:
            if len(members) == 1:
                outcomes[members[0]] = exc
                return []
        filed = []
        for i, item in zip(members, items, strict=True):
            try:
                filed.append(([i], file_in_session(session, [item], actor, settings, False, followup_each=True)))
            except ValidationFailed as exc:
                outcomes[i] = exc
        return filed
    finally:
        session.info.pop(QUIET_FILING, None)
