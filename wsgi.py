"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi COMMAND`. No monkey-patching here."""

from app import create_app

app = create_app()
