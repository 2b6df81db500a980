"""The browser UI: sign-in, the operator console, the incident page and the committee board (Vietnamese first)."""

from flask import Flask
from flask_babel import get_locale

from app.web import account, admin, board, browser, console, incident_work, labels, outbox, records, response, sources

# The modules that add pages to `browser.bp`.
PAGES = (account, admin, board, console, incident_work, outbox, records, response, sources)


def init_app(app: Flask) -> None:
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    if str(app.config["BASE_URL"]).startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    app.session_interface = browser.CookieSessions()
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked in this blueprint only: the API uses bearer tokens
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.config["BABEL_DEFAULT_LOCALE"] = "vi"
    app.config["BABEL_DEFAULT_TIMEZONE"] = "Asia/Ho_Chi_Minh"
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    browser.login_manager.init_app(app)
    browser.login_manager.login_view = "web.login"
    browser.login_manager.session_protection = "basic"
    browser.login_manager.user_loader(browser.load_user)
    browser.login_manager.login_message = None
    browser.csrf.init_app(app)
    browser.babel.init_app(app, locale_selector=browser.select_locale)

    app.register_blueprint(browser.bp)
    app.jinja_env.globals.update(
        labels=labels, get_locale=get_locale, incident_work=incident_work.page_context, outbox_notice=outbox.notice
    )
    app.jinja_env.filters.update(localtime=labels.localtime, iso=labels.iso, markdown=incident_work.markdown)
    app.after_request(browser.security_headers)
