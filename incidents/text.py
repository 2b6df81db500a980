"""Text folding for search that ignores Vietnamese diacritics (đ → d included)."""

import unicodedata

_EXTRA = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "ł": "l", "ø": "o", "æ": "ae", "ß": "ss"})


def fold(text: str) -> str:
    """Lower-case `text` and strip its accents: `Đà Nẵng` → `da nang`."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_EXTRA))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
