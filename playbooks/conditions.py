"""A playbook's or a step's `when`: the conditions an incident must meet."""

from typing import Any

from incidents.models import Incident


def matches(when: dict[str, Any] | None, incident: Incident) -> bool:
    """Whether `incident` meets every condition of a `when` mapping."""
    if not when:
        return True
    values = {
        "category": str(incident.category),
        "priority": str(incident.priority),
        "tlp": str(incident.tlp),
        "class": str(incident.incident_class),
    }
    for key, value in values.items():
        if key in when:
            allowed = when[key] if isinstance(when[key], list) else [when[key]]
            if value not in allowed:
                return False
    if "exercise" in when and bool(incident.exercise) is not bool(when["exercise"]):
        return False
    if "security_level" in when:
        system = incident.affected_system
        if system is None:
            return False
        level, cond = system.security_level, when["security_level"]
        if isinstance(cond, dict):
            if level < cond.get("min", 1) or level > cond.get("max", 5):
                return False
        elif level not in cond:
            return False
    return True
