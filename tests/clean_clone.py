"""A copy of the work tree as a fresh clone would have it: tracked and untracked-not-ignored files only."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_clean_tree(dest: Path) -> Path:
    """Copy `git ls-files -co --exclude-standard` into `dest` (no .venv, no instance/, no caches)."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    dest.mkdir(parents=True, exist_ok=True)
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if not source.is_file():  # listed but deleted in the work tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest
