"""How the admin model's field names are spelt where people see them: camelCase, as the admin API and console.

The model is snake_case Python; the API translates keys at its edge, and error messages name fields the same way.
"""

from __future__ import annotations

# camelCase loses the underscores between digits; the model's only such name is mapped back by hand.
_SNAKE_BY_HAND = {"enableForIos933": "enable_for_ios_9_3_3"}


def camel_name(name: str) -> str:
    """`past_days_to_sync` → `pastDaysToSync`; a dotted path converts part by part (`smime.signing_identity`)."""
    if "." in name:
        return ".".join(camel_name(part) for part in name.split("."))
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake_name(name: str) -> str:
    return _SNAKE_BY_HAND.get(name) or "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
