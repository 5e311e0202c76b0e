"""String checkers: `exact` (the completion equals the reference, character for character) and
`normalized` (equal after `normalize`)."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Unicode NFKC (compatibility forms: full-width letters, ligatures, non-breaking spaces
    become their plain forms), case folded, every run of whitespace one space, ends stripped."""
    # NFKC again after casefold: folding can leave a character that NFKC composes (NFKC_Casefold)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _WHITESPACE.sub(" ", folded).strip()


def check_string(completion: str, reference: str, kind: Literal["exact", "normalized"]) -> bool:
    if kind == "exact":
        return completion == reference
    return normalize(completion) == normalize(reference)
