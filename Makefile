# The README's commands: `make run` and `make test`. Everything else is a helper of those two.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test bench lint format install install-test browser system-deps alertmanager dovecot clean wheelhouse translations

# PIP_OPTS="--no-index --find-links wheelhouse" installs from a bundle made by `make wheelhouse`, with no registry.
PIP_OPTS ?=
WHEELHOUSE ?= wheelhouse

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_OPTS) --upgrade pip
	$(PY) -m pip install --quiet $(PIP_OPTS) -r requirements.txt
	touch $@

# A bundle of every runtime wheel (and pip itself) for a closed network: copy the folder, then
# `make run PIP_OPTS="--no-index --find-links wheelhouse"` there (docs/deploy.md).
wheelhouse: install
	$(PY) -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) -r requirements.txt pip
	cp requirements.txt $(WHEELHOUSE)/requirements.txt
	@echo "$$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels in $(WHEELHOUSE)/"

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(FLASK) init-db
	@$(PY) -m app.firstrun
	$(VENV)/bin/honcho start --no-prefix -f Procfile

# Debian's chromium for the browser tests; installed when we are root and it is missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null); \
	  else echo "chromium is missing: install Debian's chromium package"; fi; fi

# Pango for WeasyPrint's PDF reports (docs/reports.md); installed when we are root and it is missing.
system-deps:
	@if ! ldconfig -p | grep -q libpangoft2-1.0; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0 >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0 >/dev/null); \
	  else echo "Pango is missing: install Debian's libpango-1.0-0 and libpangoft2-1.0-0"; fi; fi

# Debian's prometheus-alertmanager: the tests fire real alerts through it into UCSC (tests/test_sources_senders.py).
alertmanager:
	@if ! command -v prometheus-alertmanager >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q prometheus-alertmanager >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q prometheus-alertmanager >/dev/null); \
	  else echo "prometheus-alertmanager is missing: install Debian's prometheus-alertmanager package"; fi; fi

# Debian's dovecot-imapd: the tests start it on loopback as the [TBSC] mailbox (tests/test_sources_mailbox.py).
dovecot:
	@if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q dovecot-imapd >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dovecot-imapd >/dev/null); \
	  else echo "dovecot is missing: install Debian's dovecot-imapd package"; fi; fi

test: install-test browser system-deps alertmanager dovecot
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup

# Every benchmark runs even if an earlier one fails; the target fails if any did.
bench: install-test
	@status=0; \
	for b in bench/intake.py bench/live.py bench/topology.py bench/paging.py bench/telegram.py bench/stix.py bench/sources.py; do $(PY) $$b || status=1; done; \
	exit $$status

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The web UI's catalogue: extract every string, merge into vi/en (new entries arrive untranslated), compile.
# Then the pages' catalogue (domain paging, kept by hand beside playbooks/messages.py), compiled.
translations: install
	$(VENV)/bin/pybabel extract -F babel.cfg -k _l --no-location --sort-output --project UCSC -o app/translations/messages.pot .
	$(VENV)/bin/pybabel update -i app/translations/messages.pot -d app/translations -D messages --no-fuzzy-matching
	$(VENV)/bin/pybabel compile -d app/translations -D messages
	$(VENV)/bin/pybabel compile -d playbooks/translations -D paging

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
