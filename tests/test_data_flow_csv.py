"""Loading labelled flow CSVs through a column mapping (small files in tmp_path)."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedguard.data import CsvMapping, load_flow_csv
from fedguard.errors import ConfigError, DataFormatError, InputError

HEADER = "src_port,proto,bytes,duration,note,label"
ROWS = [
    "443,tcp,1200,0.5,ok,benign",
    "22,tcp,80,0.01,probe,scan",
    "53,udp,60,0.001,ok,benign",
    "3389,tcp,900,2.5,many tries,bruteforce",
]
MAPPING = CsvMapping(
    label_column="label",
    attack_values=("scan", "bruteforce"),
    categorical_columns=("proto",),
    drop_columns=("note",),
)


def write(tmp_path: Path, text: str, name: str = "flows.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_loads_columns_labels_and_families(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")

    dataset = load_flow_csv(path, MAPPING)

    assert dataset.numeric_columns == ("src_port", "bytes", "duration")
    assert dataset.categorical_columns == ("proto",)
    assert dataset.numeric.tolist() == [
        [443, 1200, 0.5],
        [22, 80, 0.01],
        [53, 60, 0.001],
        [3389, 900, 2.5],
    ]
    assert dataset.labels.tolist() == [0, 1, 0, 1]
    assert dataset.families is not None
    assert dataset.families.tolist() == ["normal", "scan", "normal", "bruteforce"]


def test_byte_order_mark_crlf_and_quoted_fields(tmp_path: Path) -> None:
    rows = [
        '443,"tcp",1200,0.5,"hello, world",benign',
        '22,tcp,"80",0.01,"said ""hi""",scan',
        '53," udp ",60,0.001,ok," benign "',
    ]
    text = "\ufeff" + "\r\n".join([HEADER, *rows]) + "\r\n"
    path = write(tmp_path, text)

    dataset = load_flow_csv(path, MAPPING)

    assert dataset.numeric_columns[0] == "src_port"  # no BOM glued to the name
    assert dataset.categorical_column("proto").tolist() == ["tcp", "tcp", "udp"]
    assert dataset.numeric_column("bytes").tolist() == [1200, 80, 60]
    assert dataset.labels.tolist() == [0, 1, 0]


def test_quoted_newline_reports_the_line_where_the_record_ends(
    tmp_path: Path,
) -> None:
    rows = ['443,tcp,1200,0.5,"two\r\nlines",benign', "22,tcp,eighty,0.01,x,scan"]
    path = write(tmp_path, "\r\n".join([HEADER, *rows]) + "\r\n")

    with pytest.raises(
        DataFormatError, match=r"flows\.csv, line 4, column 3 \(bytes\): .*'eighty'"
    ):
        load_flow_csv(path, MAPPING)


def test_normal_values_mean_everything_else_is_an_attack(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    mapping = CsvMapping(
        label_column="label",
        normal_values=("benign",),
        categorical_columns=("proto",),
        drop_columns=("note",),
    )

    assert load_flow_csv(path, mapping).labels.tolist() == [0, 1, 0, 1]


def test_gzip_csv(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([HEADER, *ROWS]) + "\n").encode()))

    assert len(load_flow_csv(path, MAPPING)) == 4


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    rows = [*ROWS[:2], "53,udp,60,ok,benign", ROWS[3]]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    with pytest.raises(DataFormatError, match=r"flows\.csv, line 4: expected 6 "):
        load_flow_csv(path, MAPPING)


def test_text_in_numeric_column_names_line_and_column(tmp_path: Path) -> None:
    rows = [*ROWS[:3], "3389,tcp,900,slow,x,bruteforce"]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    with pytest.raises(
        DataFormatError, match=r"line 5, column 4 \(duration\): .*got 'slow'"
    ):
        load_flow_csv(path, MAPPING)


def test_empty_numeric_cell_is_malformed(tmp_path: Path) -> None:
    rows = ["443,tcp,,0.5,ok,benign"]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    with pytest.raises(DataFormatError, match=r"column 3 \(bytes\): .*got ''"):
        load_flow_csv(path, MAPPING)


def test_skip_mode_counts_every_kind_of_malformed_row(tmp_path: Path) -> None:
    rows = [
        ROWS[0],
        "53,udp,60,ok,benign",  # too few fields
        "22,tcp,80,inf,probe,scan",  # not finite
        ROWS[3],
        "1,tcp,2,3,x,scan,extra",  # too many fields
    ]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    dataset = load_flow_csv(path, MAPPING, on_error="skip")

    assert dataset.skipped_rows == 3
    assert dataset.numeric_column("src_port").tolist() == [443, 3389]


def test_header_only_gives_an_empty_dataset(tmp_path: Path) -> None:
    dataset = load_flow_csv(write(tmp_path, HEADER + "\n"), MAPPING)

    assert len(dataset) == 0
    assert dataset.numeric.shape == (0, 3)
    assert dataset.categorical.shape == (0, 1)


def test_empty_file_needs_a_header(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="empty; expected a header row"):
        load_flow_csv(write(tmp_path, ""), MAPPING)


def test_mapped_column_missing_from_header(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    mapping = CsvMapping(label_column="verdict", attack_values=("scan",))

    with pytest.raises(InputError, match=r"label column 'verdict' is not in the"):
        load_flow_csv(path, mapping)


def test_duplicate_header_names_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "a,a,label\n1,2,x\n")

    with pytest.raises(InputError, match=r"names a column twice: \['a'\]"):
        load_flow_csv(path, CsvMapping(label_column="label", attack_values=("x",)))


def test_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,label\n1,caf\xe9\n")

    with pytest.raises(DataFormatError, match="not UTF-8 text"):
        load_flow_csv(path, CsvMapping(label_column="label", attack_values=("x",)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of attack_values and normal_values"),
        (
            {"attack_values": ("a",), "normal_values": ("b",)},
            "exactly one of attack_values and normal_values",
        ),
        (
            {"attack_values": ("a",), "drop_columns": ("label",)},
            "cannot also be categorical or dropped",
        ),
        (
            {
                "attack_values": ("a",),
                "categorical_columns": ("x",),
                "drop_columns": ("x",),
            },
            r"both categorical and dropped; got \['x'\]",
        ),
    ],
)
def test_mapping_validation(kwargs: dict[str, tuple[str, ...]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CsvMapping(label_column="label", **kwargs)  # type: ignore[arg-type]


def test_label_values_are_compared_exactly(tmp_path: Path) -> None:
    path = write(tmp_path, "x,label\n1,Scan\n2,scan\n")
    mapping = CsvMapping(label_column="label", attack_values=("scan",))

    assert np.array_equal(load_flow_csv(path, mapping).labels, [0, 1])
