"""pydantic's validation errors as one line a user can act on: key paths, the value, what is allowed."""
from __future__ import annotations

from pydantic import ValidationError

__all__ = ["format_errors"]


def format_errors(exc: ValidationError, data: dict) -> str:
    """All errors of ``exc`` joined with '; ', each as ``key.path: message (got value)``."""
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        # Drop the union tag pydantic inserts after a tagged section (model.gcn.hidden -> model.hidden).
        if len(loc) >= 2 and loc[0] == "model" and isinstance(data.get("model"), dict) and loc[1] == data["model"].get("name"):
            del loc[1]
        if len(loc) >= 3 and loc[0] == "transforms" and isinstance(loc[1], int):
            items = data.get("transforms") or []
            if loc[1] < len(items) and isinstance(items[loc[1]], dict) and loc[2] == items[loc[1]].get("name"):
                del loc[2]
        where = ".".join(str(x) for x in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown name {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{where}: {msg}{shown}" if where else msg)
    return "; ".join(parts)
