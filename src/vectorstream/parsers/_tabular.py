"""CSV and JSON Lines: one section per row, with the row number and chosen fields as metadata."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..types import Section, Source
from ._options import ParseOptions
from ._read import iter_lines, iter_text
from ._registry import Warn

AUTO_TEXT_FIELDS = ("text", "content", "body")
_UNBOUNDED = 1 << 62
_DELIMITERS = ",;\t|"


def _auto_field(names: Sequence[str]) -> str | None:
    lowered = {n.lower(): n for n in names if isinstance(n, str)}
    for candidate in AUTO_TEXT_FIELDS:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _render(row: Mapping[Any, Any]) -> str:
    # No text field: every non-empty field as "key: value", so nothing is lost to the embedder.
    return "".join(
        f"{k}: {_as_text(v)}\n" for k, v in row.items() if k is not None and _as_text(v).strip()
    )


def _scalar(value: Any) -> Any:
    return (
        value if value is None or isinstance(value, str | int | float | bool) else _as_text(value)
    )


class _SingleColumn(csv.excel):
    # A header without any delimiter means one column: commas in its values are text.
    delimiter = "\x1f"


def _dialect(sample: list[str]) -> Any:
    """The CSV dialect, sniffed, but constrained by the header line.

    ``csv.Sniffer`` alone splits a one-column file with commas in its text, or may pick a
    character the header never uses; the header must contain the delimiter.
    """
    header = sample[0]
    counts = {d: header.count(d) for d in _DELIMITERS}
    if not any(counts.values()):
        return _SingleColumn
    try:
        sniffed = csv.Sniffer().sniff("".join(sample), delimiters=_DELIMITERS)
        if counts.get(sniffed.delimiter):
            return sniffed
    except csv.Error:
        pass

    class _Header(csv.excel):
        delimiter = max(counts, key=lambda d: counts[d])

    return _Header


def _lines(source: Source, options: ParseOptions, warn: Warn) -> Iterator[str]:
    # Whole lines: a CSV record or JSON value cannot be parsed in parts.
    for line, _ in iter_lines(iter_text(source, warn, encoding=options.encoding), _UNBOUNDED):
        yield line


@dataclass(frozen=True, slots=True)
class CsvParser:
    """CSV/TSV with a header row. The delimiter is sniffed (``,`` ``;`` tab ``|``); ``.tsv``
    files use tabs. ``metadata["row"]`` is the 1-based data row (the header is row 0)."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        lines = _lines(source, options, warn)
        sample = list(itertools.islice(lines, 50))
        if not sample:
            return
        name = (source.path or source.uri).lower()
        dialect: Any = csv.excel_tab if name.endswith((".tsv", ".tab")) else _dialect(sample)
        reader = csv.reader(itertools.chain(sample, lines), dialect)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            columns = ", ".join(header)
            field = options.text_field
            if field is not None and field not in header:
                raise ParseError(f"{source.uri}: no column {field!r}; columns are: {columns}")
            if field is None:
                field = _auto_field(header)
            missing = [f for f in options.metadata_fields if f not in header]
            if missing:
                raise ParseError(
                    f"{source.uri}: no column(s) {', '.join(map(repr, missing))}; columns are: {columns}"
                )
            index: dict[str, int] = {}
            for i, column in enumerate(header):
                index.setdefault(column, i)  # a repeated column name: the first one wins
            for number, values in enumerate(reader, start=1):
                if not any(v.strip() for v in values):
                    continue
                row = {h: (values[i] if i < len(values) else "") for h, i in index.items()}
                text = row[field] if field is not None else _render(row)
                meta: dict[str, Any] = {"row": number}
                meta.update((f, row[f]) for f in options.metadata_fields)
                yield Section(text=text, source=source.uri, metadata=meta)
        except csv.Error as exc:
            raise ParseError(
                f"{source.uri}: malformed CSV near line {reader.line_num}: {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class JsonlParser:
    """JSON Lines: one object (or string) per line. ``metadata["row"]`` is the 1-based line
    number. Invalid lines are skipped and counted in one warning; a file with no valid line is
    a ParseError."""

    def parse(self, source: Source, options: ParseOptions, warn: Warn) -> Iterator[Section]:
        good = 0
        bad: list[int] = []
        first_error = ""
        lacking = 0
        for number, line in enumerate(_lines(source, options, warn), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                if not bad:
                    first_error = f"line {number}: {exc}"
                bad.append(number)
                continue
            if isinstance(value, str):
                good += 1
                yield Section(text=value, source=source.uri, metadata={"row": number})
                continue
            if not isinstance(value, dict):
                if not bad:
                    first_error = f"line {number}: a {type(value).__name__}, not an object"
                bad.append(number)
                continue
            good += 1
            field = options.text_field or _auto_field(list(value))
            if options.text_field is not None and field not in value:
                lacking += 1
                continue
            text = _as_text(value[field]) if field is not None else _render(value)
            meta: dict[str, Any] = {"row": number}
            meta.update((f, _scalar(value[f])) for f in options.metadata_fields if f in value)
            yield Section(text=text, source=source.uri, metadata=meta)
        if bad and not good:
            raise ParseError(f"{source.uri}: not JSON Lines (no valid line; {first_error})")
        if bad:
            warn(f"{source.uri}: {len(bad)} invalid line(s) skipped ({first_error})")
        if lacking:
            warn(f"{source.uri}: {lacking} row(s) without field {options.text_field!r} skipped")


__all__ = ["AUTO_TEXT_FIELDS", "CsvParser", "JsonlParser"]
