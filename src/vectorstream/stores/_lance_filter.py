"""The shared ``where`` mapping (see ``stores.base``) as a LanceDB SQL predicate.

The columns ``source``, ``model``, ``page`` and ``chunk_index`` translate exactly. A
``metadata.<key>`` clause becomes a ``json_extract`` over the JSONB metadata column, listing every
JSON spelling of an equal value; where no exact spelling exists (a key with quotes, 1e300) the
clause is left to Python. Every row a query returns is re-checked against those clauses with
``matches``, the reference evaluator, so the SQL may be wider but never narrower.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Hit
from .base import Where, matches, validate_where

_STRING_COLUMNS = ("source", "model")


def sql_string(value: str) -> str:
    """A SQL string literal: single quotes doubled (DataFusion treats backslashes literally)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Sequence[str]) -> str:
    """``column IN ('a', 'b')`` for string values (``FALSE`` for none)."""
    if not values:
        return "FALSE"
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def _column_literals(column: str, values: Sequence[Any]) -> list[str]:
    """Literals for the values that can equal a ``column`` cell (Python ``==`` semantics)."""
    out: list[str] = []
    for v in values:
        if column in _STRING_COLUMNS:
            if isinstance(v, str):
                out.append(sql_string(v))
        elif isinstance(v, bool | int) or (
            isinstance(v, float) and v.is_integer() and abs(v) < 2**31
        ):
            out.append(str(int(v)))
        # Anything else (a string for an int column, 2.5 for a page) can never match.
    return out


def _json_texts(value: Any) -> list[str] | None:
    """The compact JSON texts LanceDB's ``json_extract`` may give for a value equal to ``value``.

    Python equality is the reference (``matches``): ``2 == 2.0 == True`` for 1, so a numeric
    filter lists every spelling. ``None`` means "no exact SQL spelling": filter in Python only.
    """
    if isinstance(value, str):
        # serde_json and Python's json agree on escapes: \" \\ \n \t …, \u00XX for other controls.
        return [json.dumps(value, ensure_ascii=False)]
    if isinstance(value, bool):
        return ["true", "1", "1.0"] if value else ["false", "0", "0.0", "-0.0"]
    if isinstance(value, float) and not value.is_integer():
        # Only plain decimals: exponent spellings differ between serde_json and Python.
        return [repr(value)] if 1e-4 <= abs(value) < 1e15 else None
    number = int(value)
    if abs(number) >= 10**15:
        return None
    texts = [str(number), f"{number}.0"]
    if number in (0, 1):
        texts.append("true" if number else "false")
    if number == 0:
        texts.append("-0.0")
    return texts


def _json_path(key: str) -> str | None:
    if not key or any(c in key for c in '"\\') or any(ord(c) < 32 for c in key):
        return None
    return f'$["{key}"]'


@dataclass(frozen=True, slots=True)
class Predicate:
    """A translated filter: ``sql`` for LanceDB and ``post`` to re-check rows in Python.

    ``post`` holds the ``metadata.*`` clauses: their SQL is a superset in exotic cases (a key
    with quotes, 1e300) or absent, so every returned row is re-checked with ``matches``.
    """

    sql: str | None
    post: dict[str, Any]

    def keeps(self, hit: Hit) -> bool:
        """Whether a hit LanceDB returned passes the clauses SQL may have answered loosely."""
        return not self.post or matches({"metadata": hit.metadata}, self.post)


def translate_where(where: Where | None) -> Predicate:
    """Translate the shared filter mapping (see ``stores.base``) into a LanceDB predicate."""
    clauses: list[str] = []
    post: dict[str, Any] = {}
    for key, value in validate_where(where).items():
        values = list(value) if isinstance(value, list | tuple) else [value]
        if key.startswith("metadata."):
            post[key] = value
            if not values:
                clauses.append("FALSE")
                continue
            path = _json_path(key[9:])
            spelled = [_json_texts(v) for v in values]
            if path is None or any(s is None for s in spelled):
                continue  # no exact SQL spelling: the Python check alone decides
            texts = dict.fromkeys(t for s in spelled if s is not None for t in s)
            literals = ", ".join(sql_string(t) for t in texts)
            clauses.append(f"json_extract(metadata, {sql_string(path)}) IN ({literals})")
            continue
        literals_list = _column_literals(key, values)
        if not literals_list:
            clauses.append("FALSE")
        elif len(literals_list) == 1:
            clauses.append(f"{key} = {literals_list[0]}")
        else:
            clauses.append(f"{key} IN ({', '.join(literals_list)})")
    return Predicate(" AND ".join(clauses) or None, post)


__all__ = ["Predicate", "sql_in", "sql_string", "translate_where"]
