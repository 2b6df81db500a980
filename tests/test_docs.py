"""The documents stay true to the code: the two-command quick start, every setting, the transition table."""

import json
import re
from pathlib import Path

from app.config import DEFAULTS
from incidents.enums import Status
from incidents.lifecycle import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_readme_quick_start_is_exactly_make_run_and_make_test():
    section = _read("README.md").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the quick start has no sh block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_markdown_links_between_documents_resolve():
    for name in ("README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _read(name)):
            if not target.startswith(("http://", "https://")):
                assert (ROOT / name).parent.joinpath(target).exists(), f"{name} links to missing {target}"


def _rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and re.fullmatch(r"`[\w+.-]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_configuration_md_documents_every_setting_with_its_default():
    rows = _rows(_read("docs/configuration.md"))
    missing = [f"UCSC_{key}" for key in DEFAULTS if f"UCSC_{key}" not in rows]
    assert missing == [], f"undocumented settings: {missing}"
    for key, default in DEFAULTS.items():
        if default is None:
            continue
        shown = rows[f"UCSC_{key}"][0]
        assert str(default) in shown or json.dumps(default) in shown, f"UCSC_{key}: default {default!r}, doc {shown!r}"


def test_api_md_transition_table_is_the_code_s_table():
    section = _read("docs/api.md").split("## The response procedure", 1)[1]
    rows = {status: cells for status, cells in _rows(section).items() if status in {s.value for s in Status}}
    assert set(rows) == {s.value for s in Status}
    for status, cells in rows.items():
        step, vietnamese, targets = cells[0], cells[1], cells[-1]
        assert step and vietnamese, status
        documented = set(re.findall(r"`([\w+]+)`", targets))
        assert documented == {t.value for t in TRANSITIONS[Status(status)]}, status
