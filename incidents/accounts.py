"""Users and API tokens: who may act, in which organisation, with which role."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidents.enums import Role
from incidents.errors import Conflict, FieldError, ValidationFailed
from incidents.models import ApiToken, Organisation, User
from incidents.policy import CAPABILITIES
from notifiers import outbound


def _organisation(session: Session, code: str) -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.code == code))
    if org is None:
        raise ValidationFailed("unknown organisation", errors=[FieldError("organisation", f"no organisation {code!r}")])
    return org


def create_user(
    *,
    session: Session,
    username: str,
    role: Role,
    organisation: str,
    password_hash: str | None,
    display_name: str | None = None,
    is_service: bool = False,
) -> User:
    """Add a user to an organisation with a role; the caller commits."""
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} exists", errors=[FieldError("username", "already taken")])
    user = User(
        username=username,
        display_name=display_name,
        role=role,
        organisation_id=_organisation(session, organisation).id,
        password_hash=password_hash,
        is_service=is_service,
    )
    session.add(user)
    session.flush()
    return user


def token_role_allowed(token_role: Role | str, user_role: Role | str) -> bool:
    """A token may act with a role that can do nothing its user's role cannot do now (its own, or a narrower one)."""
    return CAPABILITIES[Role(token_role)] <= CAPABILITIES[Role(user_role)]


def create_token(
    *,
    session: Session,
    name: str,
    role: Role,
    digest: str,
    user: str | None = None,
    organisation: str = "dic",
    webhook: tuple[str, str] | None = None,
    outbound_allow: str | Sequence[str] | None = None,
) -> ApiToken:
    """Store a token's digest; without `user`, a service account named after the token acts for it.

    `webhook` is (URL, secret): receipts of what this token files are posted there, signed with the secret;
    the URL may name an internal target only if `outbound_allow` (UCSC_OUTBOUND_ALLOW) lists it.
    """
    if webhook is not None:
        try:
            outbound.check_url(webhook[0], outbound.Allowance.parse(outbound_allow))
        except outbound.OutboundRefused as exc:
            raise ValidationFailed("invalid webhook", errors=[FieldError("webhook", str(exc))]) from None
    if user is not None:
        owner = session.scalar(select(User).where(User.username == user))
        if owner is None:
            raise ValidationFailed("unknown user", errors=[FieldError("user", f"no user {user!r}")])
        if not token_role_allowed(role, Role(owner.role)):
            raise ValidationFailed(
                "a token may not act with more than its user",
                errors=[FieldError("role", f"{user!r} is {owner.role}: a {role} token could do what they may not")],
            )
    else:
        owner = session.scalar(select(User).where(User.username == name, User.is_service.is_(True)))
        if owner is None:
            owner = create_user(
                session=session,
                username=name,
                role=role,
                organisation=organisation,
                password_hash=None,
                is_service=True,
            )
    token = ApiToken(name=name, user_id=owner.id, role=role, digest=digest, prefix=digest[:8])
    if webhook is not None:
        token.webhook_url, token.webhook_secret = webhook
    session.add(token)
    session.flush()
    return token
