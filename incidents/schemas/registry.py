"""The asset registry's and the tokens' input schemas."""

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator

from incidents.enums import ObservableType, Role
from incidents.schemas.base import Strict, Text300
from incidents.schemas.observables import normalise_value


class SystemCreate(Strict):
    """An information system for the asset registry."""

    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=300)
    owner: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="Organisation code.")
    operator: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="Organisation code.")
    security_level: int = Field(ge=1, le=5)
    national_important: bool = False
    domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(default_factory=list, max_length=200)
    public_ips: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=500)
    security_provider: Text300 | None = None
    connectivity_provider: Text300 | None = None
    os: Text300 | None = None
    services: Annotated[str, Field(max_length=5000)] | None = None

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [normalise_value(ObservableType.DOMAIN, v) for v in value]

    @field_validator("public_ips")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        out = []
        for v in value:
            try:
                out.append(str(ipaddress.ip_address(v)))
            except ValueError:
                raise ValueError(f"not an IP address: {v!r}") from None
        return out


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=150)
    role: Role
