"""Any labelled flow CSV, read through a column mapping.

The file needs a header row. The mapping names the label column and which label
values mean an attack (every other value is normal) or which mean normal traffic
(every other value is an attack), the categorical columns and the columns to drop;
all remaining columns must be numeric. Quoted fields, a UTF-8 byte-order mark, CRLF
line endings and gzip compression are handled. Label values and categories are
compared after stripping surrounding whitespace, case-sensitively.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedguard.data._tabular import OnError, parse_columns, read_text, split_records
from fedguard.data.dataset import NORMAL, Dataset, string_matrix
from fedguard.errors import ConfigError, InputError


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
                    f"{source}: {role} {name!r} is not in the header; "
                    f"the columns are: {', '.join(header)}"
                )
