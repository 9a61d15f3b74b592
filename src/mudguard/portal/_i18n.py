"""Message catalogues (English, French) and the choice of language per request.

Templates call ``t("key", name=value)``; a missing key shows the key itself (and
a test checks both catalogues have the same keys), never a blank.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGUAGES = ("en", "fr")
DEFAULT = "en"


@cache
def catalogue(language: str) -> dict[str, str]:
    """The messages of ``language`` (``en`` for anything unknown)."""
    if language not in LANGUAGES:
        language = DEFAULT
    text = resources.files(__package__).joinpath("i18n", f"{language}.json") \
        .read_text(encoding="utf-8")
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()}


def translate(language: str, key: str, **values: object) -> str:
    """The message ``key`` in ``language`` with ``{name}`` placeholders filled."""
    template = catalogue(language).get(key) or catalogue(DEFAULT).get(key) or key
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    """The language for a request: ``?lang=``, then the cookie, then Accept-Language."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return str(choice)
    return from_accept_language(accept or "")


def from_accept_language(header: str) -> str:
    """The best supported language of an Accept-Language header (RFC 9110 §12.5.4)."""
    best, best_q = DEFAULT, -1.0
    for index, part in enumerate(header[:512].split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower().split("-")[0]
        q = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # earlier entries win ties, as browsers list preferences in order
        if tag in LANGUAGES and q > 0 and q - index * 1e-6 > best_q:
            best, best_q = tag, q - index * 1e-6
    return best
