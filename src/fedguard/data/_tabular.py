"""Reading delimited text files into typed columns, shared by the dataset loaders.

Parsing is column-wise so that no Python code runs per cell on the normal path: the
``csv`` module splits records (in C), a transpose turns rows into columns and each
numeric column is converted in one pass. Only a column that fails to convert gets a
slow per-cell pass, to name the offending line and column.

Line numbers are 1-based and count physical lines of the file, so a record with a
quoted field spanning several lines is reported at the line where it ends.

Numbers are what a CSV writer produces: an optional sign, digits with an optional
decimal point and an optional exponent (``12``, ``-0.5``, ``.5``, ``1e-3``). Python's
``float`` also accepts ``1_000`` and digits of other scripts; such cells are refused
like any other text, so that a typo never silently becomes a number. Messages quote a
bad cell shortened to :data:`QUOTED_CELL_CHARS` characters.
"""

import csv
import gzip
import io
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedguard.errors import ConfigError, DataFormatError, InputError

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "skip")

_GZIP_MAGIC = b"\x1f\x8b"
# Unambiguous, so that a failing match of a long cell backtracks in linear time.
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")

QUOTED_CELL_CHARS = 40
"""Characters of a bad cell quoted in an error message (a cell can be megabytes)."""

QUOTED_NAMES = 20
"""Column names listed in an error message about a header."""


def quote_cell(text: str) -> str:
    """``repr`` of ``text``, shortened to :data:`QUOTED_CELL_CHARS` characters."""
    if len(text) <= QUOTED_CELL_CHARS:
        return repr(text)
    return repr(text[:QUOTED_CELL_CHARS]) + "…"


def quote_names(names: Sequence[str]) -> str:
    """The first :data:`QUOTED_NAMES` names, each shortened, for a message."""
    shown = [quote_cell(name) for name in names[:QUOTED_NAMES]]
    if len(names) > QUOTED_NAMES:
        shown.append(f"… ({len(names)} in all)")
    return ", ".join(shown)


def check_on_error(on_error: str) -> None:
    """Reject anything but the two supported malformed-row policies."""
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigError(
            f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}; got {on_error!r}"
        )


def read_text(path: Path) -> str:
    """Return the text of a plain or gzip-compressed UTF-8 file.

    Compression is detected from the content, not the file name. A UTF-8 byte-order
    mark is dropped; line endings are left for the ``csv`` module to handle.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise InputError(f"data file {path} does not exist") from error
    except OSError as error:
        raise InputError(f"cannot read data file {path}: {error.strerror}") from error

    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataFormatError(
                f"{path} is not a valid gzip file: {error}"
            ) from error

    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFormatError(
            f"{path} is not UTF-8 text: invalid byte at offset {error.start}"
        ) from error


@dataclass(frozen=True)
class Records:
    """Well-formed records of a file, column-major, with their line numbers."""

    header: tuple[str, ...] | None
    columns: Sequence[Sequence[str]]
    lines: NDArray[np.int64]
    skipped: int
    first_problem: str | None

    def __len__(self) -> int:
        return len(self.lines)


def split_records(
    text: str,
    source: str,
    *,
    expected_columns: int | None,
    has_header: bool,
    on_error: OnError,
) -> Records:
    """Split ``text`` into records with the expected number of fields.

    Blank lines are ignored. With ``has_header`` the first record is the header and
    fixes the expected number of fields. A record with another number of fields
    raises :class:`DataFormatError`, or is dropped and counted when ``on_error`` is
    ``"skip"``.
    """
    check_on_error(on_error)
    simple = _split_simple(
        text, expected_columns=expected_columns, has_header=has_header
    )
    if simple is not None:
        return simple
    return _split_with_csv(
        text,
        source,
        expected_columns=expected_columns,
        has_header=has_header,
        on_error=on_error,
    )


def _split_simple(
    text: str, *, expected_columns: int | None, has_header: bool
) -> Records | None:
    """The fast path: no quotes, no carriage returns and every row well formed.

    Such text splits on newlines and commas exactly as the ``csv`` module would, in
    a few C-level string operations instead of a Python step per row. Anything
    else returns ``None`` and goes through :func:`_split_with_csv`, which also
    produces the error messages.
    """
    if '"' in text or "\r" in text:
        return None
    lines = text.split("\n")
    numbers = [i + 1 for i, line in enumerate(lines) if line]
    rows = [lines[n - 1] for n in numbers]

    header = None
    if has_header:
        if not rows:
            return None
        header = tuple(name.strip() for name in rows[0].split(","))
        expected_columns = len(header)
        rows, numbers = rows[1:], numbers[1:]
    if expected_columns is None:
        return None
    if any(row.count(",") != expected_columns - 1 for row in rows):
        return None

    cells = ",".join(rows).split(",") if rows else []
    columns = [cells[j::expected_columns] for j in range(expected_columns)]
    return Records(header, columns, np.asarray(numbers, np.int64), 0, None)


def _split_with_csv(
    text: str,
    source: str,
    *,
    expected_columns: int | None,
    has_header: bool,
    on_error: OnError,
) -> Records:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: tuple[str, ...] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    problems: list[str] = []
    record_end = 0  # the line where the last complete record ended

    try:
        for row in reader:
            record_end = reader.line_num
            if not row:
                continue
            if has_header and header is None:
                header = tuple(name.strip() for name in row)
                expected_columns = len(header)
                continue
            if expected_columns is not None and len(row) != expected_columns:
                message = (
                    f"{source}, line {reader.line_num}: expected {expected_columns} "
                    f"columns; got {len(row)}"
                )
                _reject(message, on_error)
                problems.append(message)
                continue
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise _split_error(source, error, reader.line_num, record_end) from None

    if has_header and header is None:
        raise DataFormatError(f"{source} is empty; expected a header row")
    columns: list[Sequence[str]] = [() for _ in range(expected_columns or 0)]
    if rows:
        columns = list(zip(*rows, strict=True))
    return Records(
        header=header,
        columns=columns,
        lines=np.asarray(lines, dtype=np.int64),
        skipped=len(problems),
        first_problem=problems[0] if problems else None,
    )


def _split_error(
    source: str, error: csv.Error, line: int, record_end: int
) -> DataFormatError:
    """A readable message for what the ``csv`` module could not split."""
    if "unexpected end of data" in str(error):
        # The reader hit the end of the file inside a quoted field of the record
        # after the last complete one; a record spans lines only through quoted
        # fields, so the unclosed quote is on its first line or a later one.
        return DataFormatError(
            f"{source}: unclosed quote starting at or after line {record_end + 1}; "
            "the file ends inside the quoted field"
        )
    if "field larger than field limit" in str(error):
        return DataFormatError(
            f"{source}, line {line}: a field is longer than the limit of "
            f"{csv.field_size_limit():,} characters"
        )
    return DataFormatError(f"{source}, line {line}: cannot split the record: {error}")


def _reject(message: str, on_error: OnError) -> None:
    if on_error == "raise":
        raise DataFormatError(message)
    logger.debug("skipping malformed row: %s", message)


@dataclass(frozen=True)
class ParsedColumns:
    """Typed columns of the rows that passed every check."""

    numeric: NDArray[np.float64]
    text: list[NDArray[np.str_]]
    lines: NDArray[np.int64]
    skipped: int
    first_problem: str | None


def parse_columns(
    records: Records,
    *,
    numeric: Sequence[int],
    text: Sequence[int],
    names: Sequence[str],
    source: str,
    on_error: OnError,
) -> ParsedColumns:
    """Convert the ``numeric`` columns to floats and the ``text`` ones to strings.

    ``names`` holds the name of every column of the file (used in messages). A cell
    that is not a finite number raises :class:`DataFormatError` naming the file, the
    line and the column, or drops its row (counted) when ``on_error`` is ``"skip"``.
    Text cells are stripped of surrounding whitespace.
    """
    count = len(records)
    matrix = np.empty((count, len(numeric)), dtype=np.float64)
    bad_rows = np.zeros(count, dtype=bool)
    first_bad: tuple[int, int] | None = None  # (row, file column) of the earliest

    for position, index in enumerate(numeric):
        values, bad = _to_floats(records.columns[index])
        matrix[:, position] = values
        if bad.any():
            row = int(np.argmax(bad))
            if first_bad is None or row < first_bad[0]:
                first_bad = (row, index)
            bad_rows |= bad

    first_problem = records.first_problem
    if first_bad is not None:
        row, index = first_bad
        message = (
            f"{source}, line {records.lines[row]}, column {index + 1} "
            f"({names[index]}): expected a finite number; "
            f"got {quote_cell(records.columns[index][row])}"
        )
        _reject(message, on_error)
        first_problem = first_problem or message

    keep = ~bad_rows
    strings = [np.char.strip(_to_strings(records.columns[i]))[keep] for i in text]
    skipped = records.skipped + int(bad_rows.sum())
    if skipped:
        logger.warning(
            "%s: skipped %d malformed rows; first: %s", source, skipped, first_problem
        )
    return ParsedColumns(
        numeric=matrix[keep],
        text=strings,
        lines=records.lines[keep],
        skipped=skipped,
        first_problem=first_problem,
    )


def _to_strings(column: Sequence[str]) -> NDArray[np.str_]:
    return np.asarray(column, dtype=np.str_)


def _to_floats(
    column: Sequence[str],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Convert one column; return the values and a mask of the non-numbers."""
    try:
        # float() alone would take "1_000" and non-ASCII digits; a column free of
        # both converts in one pass, any other is checked cell by cell.
        joined = "".join(column)
        if "_" in joined or not joined.isascii():
            raise ValueError("needs the per-cell check")
        values = np.fromiter(map(float, column), dtype=np.float64, count=len(column))
    except ValueError:
        values = np.array([_float_or_nan(cell) for cell in column], dtype=np.float64)
    return values, ~np.isfinite(values)


def _float_or_nan(cell: str) -> float:
    """The number in ``cell``, or NaN for anything that is not a plain number."""
    if _NUMBER.fullmatch(cell) is None:
        return float("nan")
    return float(cell)
