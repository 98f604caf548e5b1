"""The shared ``where`` mapping (see ``stores.base``) as a Qdrant ``Filter``.

Each key is a ``must`` condition; ``metadata.<key>`` is Qdrant's own nested-key syntax, so it
passes as it is. Qdrant matches exact values only: a whole float is matched as the integer it
equals, a fractional one is refused. Several values of one type are a ``MatchAny``; a mix (or
booleans, which ``MatchAny`` does not take) a ``should`` of ``MatchValue``s.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ._common import scoped_items
from .base import Where


def qdrant_filter(models: Any, where: Where | None, source: str | None = None) -> Any:
    """The filter (narrowed to ``source`` when given) as a ``models.Filter``, or ``None``."""
    m = models
    must: list[Any] = []
    for key, values in scoped_items(where, source):
        field = key  # "metadata.lang" is Qdrant's own nested-key syntax
        if any(isinstance(v, float) and not float(v).is_integer() for v in values):
            raise ConfigError(f"Qdrant matches exact values only; {key!r} has a fractional number")
        vals = [int(v) if isinstance(v, float) else v for v in values]
        if (
            len(vals) > 1
            and not any(isinstance(v, bool) for v in vals)
            and len({type(v) for v in vals}) == 1
        ):
            must.append(m.FieldCondition(key=field, match=m.MatchAny(any=vals)))
        elif len(vals) == 1:
            must.append(m.FieldCondition(key=field, match=m.MatchValue(value=vals[0])))
        else:
            must.append(
                m.Filter(
                    should=[m.FieldCondition(key=field, match=m.MatchValue(value=v)) for v in vals]
                )
            )
    return m.Filter(must=must) if must else None


__all__ = ["qdrant_filter"]
