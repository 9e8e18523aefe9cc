"""Loading NSL-KDD: real files from ../shared/data and small malformed copies."""

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedguard.data import Dataset, load_nsl_kdd, load_nsl_kdd_split, nsl_kdd_schema
from fedguard.data.nsl_kdd import (
    ATTACK_FAMILIES,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    attack_families,
    attack_family,
    find_nsl_kdd_file,
)
from fedguard.errors import ConfigError, DataFormatError, InputError


def test_train_file_row_and_label_counts(kdd_train: Dataset) -> None:
    assert len(kdd_train) == 125_973
    assert kdd_train.label_counts() == {"normal": 67_343, "attack": 58_630}


def test_test_file_row_and_label_counts(kdd_test: Dataset) -> None:
    assert len(kdd_test) == 22_544
    assert kdd_test.label_counts() == {"normal": 9_711, "attack": 12_833}


def test_twenty_percent_file_row_and_label_counts(nsl_kdd_dir: Path) -> None:
    subset = load_nsl_kdd(nsl_kdd_dir / "KDDTrain+_20Percent.txt")

    assert len(subset) == 25_192
    assert subset.label_counts() == {"normal": 13_449, "attack": 11_743}
    assert subset.families is None


def test_columns_and_types(kdd_train: Dataset) -> None:
    assert len(FEATURE_COLUMNS) == 41
    assert kdd_train.numeric.shape == (125_973, 38)
    assert kdd_train.categorical_columns == ("protocol_type", "service", "flag")
    assert kdd_train.numeric_column("src_bytes").max() > 1e8
    assert set(kdd_train.categorical_column("protocol_type")) == {"icmp", "tcp", "udp"}
    assert kdd_train.labels.dtype == np.int8


def test_every_attack_name_in_the_real_files_has_a_family(
    kdd_train: Dataset, kdd_test: Dataset
) -> None:
    for dataset in (kdd_train, kdd_test):
        assert dataset.families is not None
        assert "unknown" not in set(dataset.families)
        attacks = dataset.attack_types[dataset.labels == 1]
        assert set(attacks) <= set(ATTACK_FAMILIES)


def test_test_file_family_counts(kdd_test: Dataset) -> None:
    assert kdd_test.families is not None
    names, counts = np.unique(kdd_test.families, return_counts=True)

    assert dict(zip(names.tolist(), counts.tolist(), strict=True)) == {
        "DoS": 7_460,
        "Probe": 2_421,
        "R2L": 2_885,
        "U2R": 67,
        "normal": 9_711,
    }


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("neptune", "DoS"),
        ("apache2", "DoS"),
        ("mscan", "Probe"),
        ("snmpguess", "R2L"),
        ("httptunnel", "R2L"),
        ("sqlattack", "U2R"),
        ("normal", "normal"),
        ("zero_day_2031", "unknown"),
    ],
)
def test_attack_family(name: str, family: str) -> None:
    assert attack_family(name) == family


def test_unknown_attack_name_in_a_file_gets_the_unknown_family(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    rows = [kdd_lines[0].replace(",neptune,", ",zero_day,"), kdd_lines[2]]
    path = tmp_path / "new.txt"
    path.write_text("\n".join(rows) + "\n")

    dataset = load_nsl_kdd(path, families=True)

    assert dataset.families is not None
    assert dataset.families.tolist() == ["unknown", "normal"]
    assert dataset.labels.tolist() == [1, 0]


def test_attack_families_is_vectorised_over_names() -> None:
    names = np.array(["smurf", "normal", "satan", "smurf", "perl"])

    assert attack_families(names).tolist() == ["DoS", "normal", "Probe", "DoS", "U2R"]


def test_plain_and_gzip_copies_load_the_same(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    text = "\n".join(kdd_lines) + "\n"
    plain = tmp_path / "sample.txt"
    plain.write_text(text)
    compressed = tmp_path / "sample.bin"  # detected from content, not from suffix
    compressed.write_bytes(gzip.compress(text.encode()))

    a, b = load_nsl_kdd(plain), load_nsl_kdd(compressed)

    assert len(a) == len(kdd_lines)
    assert np.array_equal(a.numeric, b.numeric)
    assert np.array_equal(a.categorical, b.categorical)
    assert np.array_equal(a.attack_types, b.attack_types)


def test_crlf_and_quoted_copies_load_the_same(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    """Quotes and CR force the csv-module path; LF-only text takes the fast one."""
    lf = tmp_path / "lf.txt"
    lf.write_text("\n".join(kdd_lines) + "\n\n")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(("\r\n".join(kdd_lines) + "\r\n").encode())
    quoted = tmp_path / "quoted.txt"
    quoted.write_text("\n".join(line.replace(",tcp,", ',"tcp",') for line in kdd_lines))

    datasets = [load_nsl_kdd(path) for path in (lf, crlf, quoted)]

    for other in datasets[1:]:
        assert np.array_equal(other.numeric, datasets[0].numeric)
        assert np.array_equal(other.categorical, datasets[0].categorical)
        assert np.array_equal(other.attack_types, datasets[0].attack_types)


def test_wrong_column_count_names_file_and_line(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    rows = list(kdd_lines[:5])
    rows[2] = rows[2].rsplit(",", 1)[0]  # drop the difficulty field
    path = tmp_path / "short.txt"
    path.write_text("\n".join(rows) + "\n")

    with pytest.raises(DataFormatError, match=r"short\.txt, line 3: expected 43 "):
        load_nsl_kdd(path)


def test_text_in_numeric_column_names_file_line_and_column(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    rows = list(kdd_lines[:5])
    fields = rows[3].split(",")
    fields[4] = "lots"  # src_bytes
    rows[3] = ",".join(fields)
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(rows) + "\n")

    with pytest.raises(
        DataFormatError,
        match=r"bad\.txt, line 4, column 5 \(src_bytes\): .*got 'lots'",
    ):
        load_nsl_kdd(path)


def test_non_finite_number_is_malformed(tmp_path: Path, kdd_lines: list[str]) -> None:
    fields = kdd_lines[0].split(",")
    fields[0] = "nan"
    path = tmp_path / "nan.txt"
    path.write_text(",".join(fields) + "\n")

    with pytest.raises(DataFormatError, match=r"line 1, column 1 \(duration\)"):
        load_nsl_kdd(path)


def test_skip_mode_drops_and_counts_malformed_rows(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    rows = list(kdd_lines[:6])
    rows[1] = rows[1].rsplit(",", 1)[0]
    fields = rows[4].split(",")
    fields[5] = "zero"  # dst_bytes
    rows[4] = ",".join(fields)
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(rows) + "\n\n")  # a trailing blank line is ignored

    dataset = load_nsl_kdd(path, on_error="skip")

    assert dataset.skipped_rows == 2
    assert len(dataset) == 4
    kept = [kdd_lines[i].split(",")[-2] for i in (0, 2, 3, 5)]
    assert dataset.attack_types.tolist() == kept


def test_on_error_must_be_known(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("")

    with pytest.raises(ConfigError, match="on_error must be one of raise, skip"):
        load_nsl_kdd(path, on_error="ignore")  # type: ignore[arg-type]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not exist"):
        load_nsl_kdd(tmp_path / "absent.txt")
    with pytest.raises(InputError, match=r"KDDTrain\+\.txt \(or KDDTrain\+\.txt\.gz\)"):
        find_nsl_kdd_file(tmp_path, "KDDTrain+.txt")


def test_split_finds_the_gzipped_training_file(nsl_kdd_dir: Path) -> None:
    assert find_nsl_kdd_file(nsl_kdd_dir, "KDDTrain+.txt").name == "KDDTrain+.txt.gz"
    assert find_nsl_kdd_file(nsl_kdd_dir, "KDDTest+.txt").name == "KDDTest+.txt"


def test_load_split_uses_train_and_test_files(
    tmp_path: Path, kdd_lines: list[str]
) -> None:
    (tmp_path / "KDDTrain+.txt.gz").write_bytes(
        gzip.compress(("\n".join(kdd_lines[:7]) + "\n").encode())
    )
    (tmp_path / "KDDTest+.txt").write_text("\n".join(kdd_lines[7:]) + "\n")

    train, test = load_nsl_kdd_split(tmp_path)

    assert (len(train), len(test)) == (7, len(kdd_lines) - 7)


def test_schema_vocabularies_cover_train_and_test(
    kdd_train: Dataset, kdd_test: Dataset
) -> None:
    schema = nsl_kdd_schema()

    assert schema.numeric_columns == NUMERIC_COLUMNS
    for feature in schema.categorical:
        seen = set(kdd_train.categorical_column(feature.name))
        seen |= set(kdd_test.categorical_column(feature.name))
        assert seen == set(feature.vocabulary)


def test_fitted_schema_never_uses_the_unknown_bucket(
    kdd_matrices: tuple[Any, ...],
) -> None:
    schema, train_matrix, _, test_matrix, _ = kdd_matrices
    unknown = [i for i, n in enumerate(schema.feature_names) if n.endswith("<unknown>")]

    assert len(unknown) == 3
    assert train_matrix[:, unknown].sum() == 0
    assert test_matrix[:, unknown].sum() == 0


@pytest.fixture(scope="module")
def kdd_lines(nsl_kdd_dir: Path) -> list[str]:
    """The first ten lines of KDDTest+ (rows 0-1 neptune, row 2 normal)."""
    with (nsl_kdd_dir / "KDDTest+.txt").open() as handle:
        return [next(handle).rstrip("\n") for _ in range(10)]
