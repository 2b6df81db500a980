"""Printed by `make run`: how to sign in and how to get an API token; creates the first admin once."""

import secrets
import sys
from pathlib import Path

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app import create_app, db
from incidents import accounts
from incidents.enums import Role
from incidents.models import User


def main() -> None:
    app = create_app()
    password_file = Path(app.instance_path) / "admin_password"
    with app.app_context():
        session = db.session()
        # The lookup autobegins a transaction, so it and the insert share one.
        with session.begin():
            if session.scalar(select(User.id).where(User.username == "admin")) is None:
                password = secrets.token_urlsafe(12)
                accounts.create_user(
                    session=session, username="admin", role=Role.ADMIN, organisation=app.config["STANDING_BODY"],
                    password_hash=generate_password_hash(password), display_name="Quản trị hệ thống",
                )  # fmt: skip
                # Written before the commit: if the commit fails, the next run makes a new admin and file.
                password_file.write_text(password + "\n")
                password_file.chmod(0o600)
    bind = app.config.get("BIND", "127.0.0.1:5000")
    print(
        f"""
UCSC is starting on http://{bind}
  Sign in / Đăng nhập:   http://{bind}/login as user "admin", password in {password_file}
                         then scan the QR code to set up two-factor sign-in (required for admins)
  Board / Ban Chỉ đạo:   http://{bind}/board
  API token / Mã API:    .venv/bin/flask --app wsgi create-token my-siem --role intake
  API reference:         http://{bind}/api/v1/docs
""",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
