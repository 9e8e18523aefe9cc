"""Any labelled flow CSV, read through a column mapping.

The file needs a header row. The mapping names the label column and which label
values mean an attack (every other value is normal) or which mean normal traffic
(every other value is an attack), the categorical columns and the columns to drop;
all remaining columns must be numeric. Quoted fields, a UTF-8 byte-order mark, CRLF
line endings and gzip compression are handled. Label values and categories are
compared after stripping surrounding whitespace, case-sensitively.

A mapping can also come from a TOML file (:func:`read_mapping_file`)::

    label_column = "verdict"
    attack_values = ["scan", "bruteforce"]   # or normal_values = ["ok"]
    categorical_columns = ["proto"]
    drop_columns = ["flow_id"]

:func:`check_labels` refuses a mapping whose values match no row, which is almost
always a typo in a value; it names the label values the file actually holds.
"""

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedguard.data._tabular import (
    QUOTED_CELL_CHARS,
    OnError,
    parse_columns,
    quote_cell,
    quote_names,
    read_text,
    split_records,
)
from fedguard.data.dataset import NORMAL, Dataset, string_matrix
from fedguard.errors import ConfigError, InputError

MAPPING_KEYS = (
    "label_column",
    "attack_values",
    "normal_values",
    "categorical_columns",
    "drop_columns",
)
SHOWN_LABEL_VALUES = 10
"""The most common label values an error message lists."""


@dataclass(frozen=True)
class CsvMapping:
    """How the columns of a flow CSV map onto a :class:`Dataset`.

    Give exactly one of ``attack_values`` and ``normal_values``. For attack rows the
    label value doubles as the attack family, so the family partitioner can use it.
    """

    label_column: str
    attack_values: tuple[str, ...] = ()
    normal_values: tuple[str, ...] = ()
    categorical_columns: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.attack_values) == bool(self.normal_values):
            raise ConfigError(
                "give exactly one of attack_values and normal_values; got "
                f"attack_values={list(self.attack_values)} and "
                f"normal_values={list(self.normal_values)}"
            )
        if self.label_column in (*self.categorical_columns, *self.drop_columns):
            raise ConfigError(
                f"label column {self.label_column!r} cannot also be categorical "
                "or dropped"
            )
        overlap = set(self.categorical_columns) & set(self.drop_columns)
        if overlap:
            raise ConfigError(
                f"columns cannot be both categorical and dropped; got {sorted(overlap)}"
            )

    def is_attack(self, values: NDArray[np.str_]) -> NDArray[np.bool_]:
        """Binary target for an array of (stripped) label values."""
        if self.attack_values:
            return np.isin(values, self.attack_values)
        return ~np.isin(values, self.normal_values)


def load_flow_csv(
    path: str | Path, mapping: CsvMapping, *, on_error: OnError = "raise"
) -> Dataset:
    """Load a labelled flow CSV.

    A row with the wrong number of fields, or a numeric column holding something
    that is not a finite number, raises :class:`DataFormatError` naming the file, the
    line and the column, or is dropped and counted in :attr:`Dataset.skipped_rows`
    when ``on_error`` is ``"skip"``.
    """
    path = Path(path)
    source = str(path)
    records = split_records(
        read_text(path),
        source,
        expected_columns=None,
        has_header=True,
        on_error=on_error,
    )
    header = records.header or ()
    _check_header(header, mapping, source)

    mapped = {mapping.label_column, *mapping.categorical_columns, *mapping.drop_columns}
    numeric_columns = tuple(name for name in header if name not in mapped)
    text_columns = (*mapping.categorical_columns, mapping.label_column)
    parsed = parse_columns(
        records,
        numeric=[header.index(name) for name in numeric_columns],
        text=[header.index(name) for name in text_columns],
        names=header,
        source=source,
        on_error=on_error,
    )

    label_values = parsed.text[-1]
    labels = mapping.is_attack(label_values).astype(np.int8)
    return Dataset(
        numeric_columns=numeric_columns,
        numeric=parsed.numeric,
        categorical_columns=mapping.categorical_columns,
        categorical=string_matrix(parsed.text[:-1], len(labels)),
        labels=labels,
        attack_types=label_values,
        families=np.where(labels == 1, label_values, NORMAL).astype(np.str_),
        name=path.name,
        skipped_rows=parsed.skipped,
    )


def _check_header(header: Sequence[str], mapping: CsvMapping, source: str) -> None:
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InputError(f"{source}: header names a column twice: {duplicates}")

    wanted = [
        ("label column", [mapping.label_column]),
        ("categorical column", list(mapping.categorical_columns)),
        ("drop column", list(mapping.drop_columns)),
    ]
    for role, names in wanted:
        for name in names:
            if name not in header:
                raise InputError(
                    f"{source}: {role} {quote_cell(name)} is not in the header; "
                    f"the columns are: {quote_names(header)}"
                )


def read_mapping_file(path: Path) -> CsvMapping:
    """The column mapping in a TOML file (keys: :data:`MAPPING_KEYS`)."""
    try:
        with path.open("rb") as stream:
            table = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"mapping file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(
            f"cannot read mapping file {path}: {error.strerror}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"mapping file {path} is not UTF-8 text: invalid byte at offset "
            f"{error.start}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"mapping file {path} is not valid TOML: {error}") from None
    return mapping_from_table(table, f"mapping file {path}")


def mapping_from_table(table: Mapping[str, Any], source: str) -> CsvMapping:
    """A :class:`CsvMapping` from a parsed TOML table, every value type-checked."""
    unknown = sorted(set(table) - set(MAPPING_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {source}; accepted: "
            f"{', '.join(sorted(MAPPING_KEYS))}"
        )
    label_column = table.get("label_column")
    if not isinstance(label_column, str) or not label_column.strip():
        raise ConfigError(
            f"{source}: label_column must be the name of the label column, a "
            f'string such as label_column = "label"; got {label_column!r}'
        )
    names = {key: _names(table, key, source) for key in MAPPING_KEYS[1:]}
    try:
        return CsvMapping(label_column=label_column.strip(), **names)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _names(table: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    """A list of names or values; integers are read as their text."""
    value = table.get(key, [])
    if isinstance(value, str):
        example = json.dumps(value[:QUOTED_CELL_CHARS])  # TOML's basic string syntax
        raise ConfigError(
            f"{source}: {key} must be a list, e.g. {key} = [{example}]; "
            f"got the string {quote_cell(value)}"
        )
    if not isinstance(value, list) or not all(
        isinstance(item, str | int) and not isinstance(item, bool) for item in value
    ):
        raise ConfigError(
            f"{source}: {key} must be a list of strings; got {quote_cell(repr(value))}"
        )
    return tuple(str(item).strip() for item in value)


def check_labels(
    dataset: Dataset, mapping: CsvMapping, source: str, *, both_classes: bool = False
) -> None:
    """Refuse rows the mapping cannot label usefully.

    Refused: no rows at all; ``attack_values`` that match no row; ``normal_values``
    that match no row (every row would be an attack). With ``both_classes`` (data a
    model is trained on) also a mapping under which every row has the same class.
    Messages name the label column, the values given and the most common values
    present.
    """
    if len(dataset) == 0:
        raise InputError(f"{source} has no data rows, only a header")

    column = quote_cell(mapping.label_column)
    if mapping.attack_values:
        given = f"attack_values [{quote_names(mapping.attack_values)}]"
        unmatched, everything = dataset.num_attacks == 0, dataset.num_normal == 0
        consequence = "so there is no normal traffic to learn from"
    else:
        given = f"normal_values [{quote_names(mapping.normal_values)}]"
        unmatched, everything = dataset.num_normal == 0, dataset.num_attacks == 0
        consequence = "so there is no attack to learn from"

    if unmatched:
        problem = f"no row's {column} value is one of {given}"
    elif everything and both_classes:
        problem = f"every row's {column} value is one of {given}, {consequence}"
    else:
        return
    raise InputError(
        f"{source}: {problem}; the column holds {label_summary(dataset)} "
        "(values are compared exactly, case included)"
    )


def label_summary(dataset: Dataset) -> str:
    """The most common label values with their counts, for a message."""
    values, counts = np.unique(dataset.attack_types, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:SHOWN_LABEL_VALUES]
    shown = [f"{quote_cell(str(values[i]))} ({int(counts[i]):,})" for i in order]
    if len(values) > SHOWN_LABEL_VALUES:
        shown.append(f"… {len(values):,} distinct values in all")
    return ", ".join(shown)
