"""The response procedure of Circular 20 Art. 11 as one explicit transition table."""

from incidents.enums import Status

S = Status
_OPEN = (S.NEW, S.TRIAGE, S.FIRST_RESPONSE, S.CONTAINMENT, S.ERADICATION, S.RECOVERY, S.ASSESSMENT, S.REVIEW)

TRANSITIONS: dict[Status, frozenset[Status]] = {
    # 1a receive → 1a verify and classify; a report that is no incident is rejected at verification.
    S.NEW: frozenset({S.TRIAGE, S.REJECTED}),
    S.TRIAGE: frozenset({S.FIRST_RESPONSE, S.REJECTED}),
    # 1b–1e → 2 contain and handle
    S.FIRST_RESPONSE: frozenset({S.CONTAINMENT}),
    S.CONTAINMENT: frozenset({S.ERADICATION}),
    S.ERADICATION: frozenset({S.RECOVERY}),
    S.RECOVERY: frozenset({S.ASSESSMENT}),
    # 3c check the system: loops back to 2 when it is not stable.
    S.ASSESSMENT: frozenset({S.REVIEW, S.CONTAINMENT}),
    S.REVIEW: frozenset({S.CLOSED}),
    # reopen
    S.CLOSED: frozenset({S.CONTAINMENT}),
    S.REJECTED: frozenset(),
    S.MERGED: frozenset(),
}
# A duplicate can be recognised at any point while the incident is open.
for _state in _OPEN:
    TRANSITIONS[_state] = TRANSITIONS[_state] | {S.MERGED}


def allowed_targets(current: Status) -> list[Status]:
    """The states `current` may move to, in procedure order."""
    order = list(Status)
    return sorted(TRANSITIONS[current], key=order.index)


def is_allowed(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
