"""The admin page: users (role, active, second factor), organisations; thin handlers over incidents.signin."""

from typing import Any

from flask import flash, redirect, request, url_for
from flask_babel import gettext as _

from app import db
from app.auth import signin_policy
from app.web.browser import bp, current_actor
from app.web.views import field_errors, render, roles
from incidents import signin
from incidents.enums import Role
from incidents.errors import Conflict, NotFound, ValidationFailed
from incidents.policy import Capability, roles_with
from incidents.systems import list_organisations


def _page(status: int = 200, **context: Any) -> Any:
    session = db.session()
    context.setdefault("errors", {})
    context.setdefault("form", {})
    return render(
        "admin.html",
        status,
        users=signin.list_users(session),
        organisations=list_organisations(session),
        required_roles=sorted(signin_policy().totp_required_roles),
        roles=[r for r in Role if r is not Role.INTAKE],
        **context,
    )


@bp.route("/admin")
@roles(*roles_with(Capability.MANAGE_USERS))
def admin() -> Any:
    return _page()


@bp.route("/admin/users", methods=["POST"])
@roles(*roles_with(Capability.MANAGE_USERS))
def admin_create_user() -> Any:
    f = request.form
    try:
        signin.admin_create_user(
            session=db.session(),
            actor=current_actor(),
            username=f.get("username", "").strip(),
            display_name=f.get("display_name", "").strip(),
            role=f.get("role", ""),
            organisation=f.get("organisation", ""),
            password=f.get("password", ""),
            source_ip=request.remote_addr,
        )
    except (ValidationFailed, Conflict) as exc:
        return _page(422, errors=field_errors(exc.errors or []), form=f, error=exc.detail)
    flash(_("User %(name)s created.", name=f.get("username", "").strip()), "ok")
    return redirect(url_for("web.admin"))


@bp.route("/admin/users/<int:user_id>", methods=["POST"])
@roles(*roles_with(Capability.MANAGE_USERS))
def admin_update_user(user_id: int) -> Any:
    f = request.form
    try:
        signin.admin_update_user(
            session=db.session(),
            actor=current_actor(),
            user_id=user_id,
            role=f.get("role", ""),
            active=bool(f.get("active")),
            reset_totp=bool(f.get("reset_totp")),
            source_ip=request.remote_addr,
        )
    except (ValidationFailed, Conflict, NotFound) as exc:
        flash(_("Refused: %(details)s", details=exc.detail), "error")
    else:
        flash(_("User updated."), "ok")
    return redirect(url_for("web.admin"))


@bp.route("/admin/organisations", methods=["POST"])
@roles(*roles_with(Capability.MANAGE_USERS))
def admin_create_organisation() -> Any:
    f = request.form
    try:
        signin.admin_create_organisation(
            session=db.session(),
            actor=current_actor(),
            code=f.get("code", "").strip(),
            name_vi=f.get("name_vi", "").strip(),
            name_en=f.get("name_en", "").strip(),
        )
    except (ValidationFailed, Conflict) as exc:
        return _page(422, org_errors=field_errors(exc.errors or []), org_form=f)
    flash(_("Organisation created."), "ok")
    return redirect(url_for("web.admin"))
