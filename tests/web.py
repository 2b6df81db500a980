"""Helpers of the web tests: users with passwords, CSRF tokens read from pages, signing in a test client."""

import re

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from app import db
from incidents import accounts
from incidents.enums import Role
from incidents.models import User

PASSWORD = "correct horse battery"
# Test users get a cheap (real) hash: scrypt costs ~0.2 s per sign-in here, and these tests sign in hundreds of times.
# The production path (scrypt) is exercised by the password change and admin tests.
TEST_HASH = "pbkdf2:sha256:1000"


def make_user(
    app: Flask,
    username: str,
    role: str = "operator",
    organisation: str = "dic",
    *,
    totp: bool = False,
    language: str = "vi",
) -> str | None:
    """Create a web user with PASSWORD; returns the TOTP secret when `totp`."""
    secret = pyotp.random_base32() if totp else None
    with app.app_context():
        s = db.session()
        with s.begin():
            user = accounts.create_user(
                session=s,
                username=username,
                role=Role(role),
                organisation=organisation,
                password_hash=generate_password_hash(PASSWORD, TEST_HASH),
                display_name=username,
            )
            user.totp_secret = secret
            user.language = language
    return secret


def user_row(app: Flask, username: str) -> User:
    from sqlalchemy import select

    with app.app_context():
        s = db.session()
        user = s.scalar(select(User).where(User.username == username))
        s.expunge(user)
        return user


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD, totp: str | None = None):
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf(page.text)})
    if totp is not None and response.status_code == 302 and response.headers["Location"].endswith("/login/totp"):
        page = client.get("/login/totp")
        response = client.post("/login/totp", data={"code": pyotp.TOTP(totp).now(), "csrf_token": csrf(page.text)})
    return response


def text_of(html: str) -> str:
    """Visible text of a page, roughly: tags, scripts and attributes stripped."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
