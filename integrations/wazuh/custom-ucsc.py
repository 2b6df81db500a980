"""Wazuh integratord -> UCSC: post one alert to POST /api/v1/sources/wazuh (Python standard library only).

integratord calls `custom-ucsc ALERT_FILE API_KEY HOOK_URL [debug] [OPTIONS_FILE]` for each alert that matches
the <integration> block: ALERT_FILE holds the alert as JSON, API_KEY is <api_key> (the UCSC intake token, sent as
`Authorization: Bearer`), HOOK_URL is <hook_url>. The alert's `id` is UCSC's idempotency key, so a retry after a
lost answer files nothing twice. The token is never written to the log.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

# integratord's own codes for the shipped integrations, kept so its log reads the same.
ERR_BAD_ARGUMENTS, ERR_FILE_NOT_FOUND, ERR_INVALID_JSON, ERR_NOT_DELIVERED = 2, 6, 7, 8
ATTEMPTS = 4
TIMEOUT_SECONDS = 10
WAZUH_HOME = Path(__file__).resolve().parent.parent
LOG_FILE = Path(os.environ.get("UCSC_INTEGRATION_LOG", WAZUH_HOME / "logs" / "integrations.log"))
debug_enabled = False


def log(message: str, *, always: bool = False) -> None:
    if not (debug_enabled or always):
        return
    line = f"{datetime.now(UTC).isoformat(timespec='seconds')} custom-ucsc: {message}\n"
    try:
        with LOG_FILE.open("a", encoding="utf-8") as f:
            f.write(line)
    except OSError:
        sys.stderr.write(line)


def read_json(path: str, what: str, missing_code: int) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        log(f"{what} file {path} does not exist", always=True)
        sys.exit(missing_code)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log(f"{what} file {path} is not JSON: {exc}", always=True)
        sys.exit(ERR_INVALID_JSON)


def post(url: str, api_key: str, body: bytes, options: dict) -> int:
    """POST with retries on connection errors, 429 and 5xx (the alert id makes a repeat harmless)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "wazuh-custom-ucsc/1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    context = ssl.create_default_context(cafile=options.get("ca_file")) if url.startswith("https:") else None
    delay = 1.0
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) URL from ossec.conf
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:  # noqa: S310
                log(f"delivered: HTTP {response.status} {response.read(300).decode(errors='replace')}")
                return response.status
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode(errors="replace")
            if exc.code != 429 and exc.code < 500:
                log(f"refused: HTTP {exc.code} {detail}", always=True)
                return exc.code
            retry_after = exc.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else delay
            log(f"attempt {attempt}: HTTP {exc.code}; retrying in {wait:.0f}s", always=True)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            wait = delay
            log(f"attempt {attempt}: {getattr(exc, 'reason', exc)}; retrying in {wait:.0f}s", always=True)
        if attempt < ATTEMPTS:
            time.sleep(min(wait, 30.0))
            delay *= 2
    return 0


def main(args: list[str]) -> int:
    global debug_enabled
    if len(args) < 4:
        log(f"wrong arguments: expected ALERT_FILE API_KEY HOOK_URL, got {len(args) - 1}", always=True)
        return ERR_BAD_ARGUMENTS
    alert_file, api_key, hook_url = args[1], args[2], args[3]
    debug_enabled = len(args) > 4 and args[4] == "debug"
    options_file = next((a for a in args[4:] if a.endswith("options")), None)
    options = read_json(options_file, "options", ERR_INVALID_JSON) if options_file else {}
    alert = read_json(alert_file, "alert", ERR_FILE_NOT_FOUND)
    log(f"alert {alert.get('id')} (rule {alert.get('rule', {}).get('id')}) to {hook_url.split('?')[0]}")
    status = post(hook_url, api_key, json.dumps(alert).encode(), options)
    return 0 if 200 <= status < 300 else ERR_NOT_DELIVERED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
