"""Sign-in under attack, through the real login form on SQLite and PostgreSQL: second-factor failures, trusted
proxies, per-address throttling instead of account lockout, and re-enrolment of the second factor."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app, db
from incidents.models import AuditEntry, BrowserSession
from tests.web import PASSWORD, csrf, make_user, sign_in, user_row

ATTACKER = "192.0.2.66"
REAL_USER = "198.51.100.10"


def wrong_code(secret: str) -> str:
    """Six digits that are none of the codes the server accepts right now (current and adjacent steps)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + offset) for offset in (-60, -30, 0, 30, 60)}
    return next(code for code in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if code not in valid)


def client_at(app: Flask, address: str, forwarded_for: str | None = None) -> FlaskClient:
    """A browser whose connection comes from `address`, optionally with an X-Forwarded-For header."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    if forwarded_for is not None:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client


def submit_code(client: FlaskClient, code: str):
    page = client.get("/login/totp")
    return client.post("/login/totp", data={"code": code, "csrf_token": csrf(page.text)})


def audit_rows(app: Flask, action: str | None = None) -> list[AuditEntry]:
    with app.app_context():
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        rows = list(db.session().scalars(stmt))
        db.session().expunge_all()
        return rows


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7a_a_correct_password_does_not_clear_second_factor_failures(app: Flask) -> None:
    secret = make_user(app, "boss", role="admin", totp=True)
    browser = client_at(app, ATTACKER)
    refusals = []
    for _ in range(3):  # someone who knows the password: 12 wrong codes, the password given again between them
        step = sign_in(browser, "boss")
        assert step.status_code == 302 and step.headers["Location"].endswith("/login/totp")
        for _ in range(4):
            refusals.append(submit_code(browser, wrong_code(secret)))
    assert all(r.status_code == 401 for r in refusals)
    assert "Mã sai hoặc đã hết hạn." in refusals[0].text
    # The fifth wrong code locked the second factor; a correct password since then cleared nothing.
    assert "bị khóa" in refusals[4].text and "bị khóa" in refusals[-1].text
    sign_in(browser, "boss")
    right = submit_code(browser, pyotp.TOTP(secret).now())
    assert right.status_code == 401 and "bị khóa" in right.text
    assert browser.get("/incidents").status_code == 302
    locked = audit_rows(app, "login.locked")
    assert locked and locked[0].data["reason"] == "wrong TOTP code" and locked[0].source_ip == ATTACKER
    # The lock is the second factor's: it ends with its time, and a right code then clears the count.
    with app.app_context():
        user = user_row(app, "boss")
        assert user.totp_failures == 0 and user.totp_locked_until is not None


@pytest.mark.parametrize("app_config", [{"TRUSTED_PROXIES": 1, "LOGIN_RATE_LIMIT": ""}])
def test_finding_7b_behind_a_trusted_proxy_the_audit_and_throttle_record_the_forwarded_address(app: Flask) -> None:
    make_user(app, "op")
    attacker = client_at(app, "127.0.0.1", forwarded_for="203.0.113.7")
    assert sign_in(attacker, "op", "wrong password!").status_code == 401
    failed = audit_rows(app, "login.failed")
    assert [row.source_ip for row in failed] == ["203.0.113.7"]
    for _ in range(4):
        assert sign_in(attacker, "op", "wrong password!").status_code == 401
    assert sign_in(attacker, "op").status_code == 429
    # Another client behind the same nginx is another address: the proxy's own address is not the key.
    real = client_at(app, "127.0.0.1", forwarded_for="198.51.100.10")
    assert sign_in(real, "op").status_code == 302
    assert audit_rows(app, "login.succeeded")[-1].source_ip == "198.51.100.10"
    with app.app_context():
        assert db.session().scalars(select(BrowserSession.source_ip)).all() == ["198.51.100.10"]


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7b_without_trusted_proxies_a_forwarded_header_is_ignored(app: Flask) -> None:
    assert app.config["TRUSTED_PROXIES"] == 0
    make_user(app, "op")
    spoofer = client_at(app, "192.0.2.5", forwarded_for="10.9.8.7")
    assert sign_in(spoofer, "op", "wrong password!").status_code == 401
    assert sign_in(spoofer, "op").status_code == 302
    assert [row.source_ip for row in audit_rows(app) if row.action.startswith("login.")] == ["192.0.2.5"] * 2
    # A new forged address on every try does not escape the throttle either.
    for n in range(5):
        sign_in(client_at(app, "192.0.2.6", forwarded_for=f"10.0.0.{n}"), "op", "wrong password!")
    assert sign_in(client_at(app, "192.0.2.6", forwarded_for="10.0.0.99"), "op").status_code == 429


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7c_wrong_passwords_throttle_one_address_for_one_account_with_backoff_never_the_real_user(
    app: Flask, database_url: str
) -> None:
    make_user(app, "chair", role="committee")
    # A second web instance on the same database, as several gunicorn instances are (built first: the wait is short).
    other_instance = create_app({**app.config, "DATABASE_URL": database_url})
    second = client_at(other_instance, ATTACKER)
    second.get("/login")
    attacker = client_at(app, ATTACKER)
    for _ in range(5):
        response = sign_in(attacker, "chair", "wrong password!")
        assert response.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu." in response.text
    # Now that address waits before its next try for this account is even checked, right password or not.
    waited = sign_in(attacker, "chair")
    assert waited.status_code == 429 and waited.headers["Retry-After"] == "1"
    assert "Quá nhiều lần đăng nhập sai" in waited.text
    assert attacker.get("/incidents").status_code == 302
    assert sign_in(second, "chair").status_code == 429  # the other instance shares the count
    # The real user, from another address, is never locked out.
    real = client_at(app, REAL_USER)
    assert sign_in(real, "chair").status_code == 302
    assert real.get("/board").status_code == 200
    # Backoff doubles: after the wait one more try is checked, and the next wait is two seconds.
    time.sleep(1.1)
    assert sign_in(attacker, "chair", "wrong password!").status_code == 401
    again = sign_in(attacker, "chair", "wrong password!")
    assert again.status_code == 429 and again.headers["Retry-After"] == "2"
    english = client_at(app, ATTACKER)
    english.get("/login?lang=en")
    assert "Too many failed sign-ins" in sign_in(english, "chair").text
    rows = audit_rows(app, "login.failed")
    assert {row.source_ip for row in rows} == {ATTACKER}
    assert rows[4].data["wait_seconds"] == 1 and rows[-1].data["wait_seconds"] == 2
    assert "login.locked" not in {row.action for row in audit_rows(app)}
    with other_instance.app_context():
        db.engine().dispose()


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": "", "LOGIN_ADDRESS_FREE_FAILURES": 6}])
def test_finding_7c_one_address_spraying_many_accounts_meets_the_per_address_cap(app: Flask) -> None:
    for name in ("op", "chair", "resp"):
        make_user(app, name)
    sprayer = client_at(app, ATTACKER)
    for name in ("op", "chair", "resp", "nobody", "admin", "root"):
        assert sign_in(sprayer, name, "Password123!").status_code == 401
    capped = sign_in(sprayer, "ghost", "Password123!")
    assert capped.status_code == 429 and int(capped.headers["Retry-After"]) >= 1
    assert sign_in(sprayer, "op").status_code == 429  # the cap is the address's, whatever the account
    assert sign_in(client_at(app, REAL_USER), "op").status_code == 302


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7d_totp_re_enrolment_asks_for_the_password_or_a_current_code(app: Flask, client: FlaskClient) -> None:
    old_secret = make_user(app, "boss", role="admin", totp=True)
    assert sign_in(client, "boss", totp=old_secret).status_code == 302

    def enrol(**fields: str):
        page = client.get("/account/totp")
        assert 'name="current_password"' in page.text and 'name="current_code"' in page.text
        new = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
        data = {"code": pyotp.TOTP(new).now(), "csrf_token": csrf(page.text), **fields}
        return client.post("/account/totp", data=data), new

    # A stolen session alone cannot replace the second factor.
    refused, _ = enrol()
    assert refused.status_code == 422 and "field-error" in refused.text
    refused, _ = enrol(current_password="wrong password!")
    assert refused.status_code == 422
    refused, _ = enrol(current_code=wrong_code(old_secret))
    assert refused.status_code == 422
    assert user_row(app, "boss").totp_secret == old_secret
    done, new_secret = enrol(current_password=PASSWORD)
    assert done.status_code == 302 and user_row(app, "boss").totp_secret == new_secret
    # Or a code of the authenticator in use (the next step's: this step's code was spent by the enrolment).
    done, newest = enrol(current_code=pyotp.TOTP(new_secret).at(time.time() + 30))
    assert done.status_code == 302 and user_row(app, "boss").totp_secret == newest
    assert [row.action for row in audit_rows(app, "totp.enrolled")] == ["totp.enrolled"] * 2


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7c_a_user_name_no_account_can_have_is_a_wrong_sign_in_counted_for_the_address(app: Flask) -> None:
    make_user(app, "op")
    odd = client_at(app, ATTACKER)
    for name in ("op\x00", "\x00", "o" * 151, "op\n"):
        response = sign_in(odd, name, "x\x00y")
        assert response.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu." in response.text
    assert [row.source_ip for row in audit_rows(app, "login.failed")] == [ATTACKER] * 4


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7c_a_session_cannot_guess_the_password_on_the_password_change_form(app: Flask) -> None:
    make_user(app, "op")
    browser = client_at(app, ATTACKER)
    assert sign_in(browser, "op").status_code == 302

    def change(current: str):
        page = browser.get("/account/password")
        new = "a new long password"
        data = {"current_password": current, "new_password": new, "repeat_password": new, "csrf_token": csrf(page.text)}
        return browser.post("/account/password", data=data)

    for _ in range(5):
        assert change("wrong password!").status_code == 422
    waited = change(PASSWORD)
    assert waited.status_code == 429 and waited.headers["Retry-After"] == "1"
    assert "Quá nhiều lần đăng nhập sai" in waited.text
    assert sign_in(client_at(app, REAL_USER), "op").status_code == 302  # the password is unchanged
    time.sleep(1.1)
    assert change(PASSWORD).status_code == 302


@pytest.mark.parametrize("app_config", [{"LOGIN_RATE_LIMIT": ""}])
def test_finding_7c_parallel_tries_from_one_address_cannot_outrun_the_count(app: Flask) -> None:
    make_user(app, "chair", role="committee")
    browsers = [client_at(app, ATTACKER) for _ in range(12)]
    tokens = [csrf(b.get("/login").text) for b in browsers]
    barrier = threading.Barrier(len(browsers))

    def attempt(n: int) -> int:
        barrier.wait()
        data = {"username": "chair", "password": "wrong password!", "csrf_token": tokens[n]}
        return browsers[n].post("/login", data=data).status_code

    with ThreadPoolExecutor(len(browsers)) as pool:
        statuses = sorted(pool.map(attempt, range(len(browsers))))
    # Each try is counted before its password is checked: five are checked, the rest wait.
    assert statuses == [401] * 5 + [429] * 7


def test_a_rotated_secret_key_is_obeyed_and_the_old_key_only_while_a_fallback(app: Flask) -> None:
    """The session cookie's serializer is built once per set of keys (app/web/browser.CookieSessions): a key rotated
    in a running process must still be obeyed, the old key honoured only while SECRET_KEY_FALLBACKS names it."""
    make_user(app, "rotor", role="operator")
    browser = client_at(app, REAL_USER)
    assert sign_in(browser, "rotor").status_code == 302
    assert browser.get("/incidents").status_code == 200
    old = app.config["SECRET_KEY"]
    app.config.update(SECRET_KEY="a-new-key-" + "x" * 32, SECRET_KEY_FALLBACKS=[old])
    assert browser.get("/incidents").status_code == 200  # signed with the old key, still a fallback
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert browser.get("/incidents").status_code == 302  # the old key is gone: the cookie no longer signs anyone in


def test_a_request_without_a_cookie_gets_none_and_signing_out_deletes_the_cookie(app: Flask, operator: dict) -> None:
    """CookieSessions skips reading a cookie that was not sent and saving a session nobody touched: a request
    without a cookie still starts one when the page needs it (the login form's CSRF token), and a session emptied
    by signing out still deletes the browser's cookie."""
    browser = client_at(app, REAL_USER)
    bare = browser.get("/api/v1/incidents", headers=operator)  # a SIEM's or script's call: a token, no cookie
    assert bare.status_code == 200 and "Set-Cookie" not in bare.headers and bare.headers["Vary"] == "Cookie"
    page = browser.get("/login")
    assert page.headers.get("Set-Cookie", "").startswith("session=") and "Cookie" in page.headers["Vary"]
    make_user(app, "leaver", role="operator")
    assert sign_in(browser, "leaver").status_code == 302
    signed_in = browser.get("/incidents")
    assert signed_in.status_code == 200
    out = browser.post("/logout", data={"csrf_token": csrf(signed_in.text)})
    assert out.status_code == 302
    gone = out.headers.get("Set-Cookie", "")
    assert gone.startswith("session=;") and "Expires=Thu, 01 Jan 1970" in gone
    assert browser.get("/incidents").status_code == 302  # signed out: back to the login page
