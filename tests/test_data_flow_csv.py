"""Loading labelled flow CSVs through a column mapping (small files in tmp_path)."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedguard.data import CsvMapping, check_labels, load_flow_csv, read_mapping_file
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


# --- numbers, long cells and quotes --------------------------------------------------


@pytest.mark.parametrize("cell", ["1_000", "١٢", "0x10", "1,5"])
def test_only_plain_numbers_are_numbers(tmp_path: Path, cell: str) -> None:
    quoted = f'"{cell}"' if "," in cell else cell
    path = write(tmp_path, f"x,label\n1,scan\n{quoted},ok\n")

    with pytest.raises(DataFormatError, match=r"line 3, column 1 \(x\): .*got '"):
        load_flow_csv(path, CsvMapping(label_column="label", attack_values=("scan",)))


def test_plain_number_forms_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "x,label\n+.5,scan\n-2.,ok\n1e-3,ok\n 7 ,ok\n3E+2,ok\n")

    dataset = load_flow_csv(
        path, CsvMapping(label_column="label", attack_values=("scan",))
    )

    assert dataset.numeric_column("x").tolist() == [0.5, -2.0, 0.001, 7.0, 300.0]


def test_a_huge_bad_cell_is_quoted_shortened(tmp_path: Path) -> None:
    cell = "9" * 5_000_000 + "x"
    path = write(tmp_path, f"x,label\n{cell},scan\n")

    with pytest.raises(DataFormatError) as caught:
        load_flow_csv(path, CsvMapping(label_column="label", attack_values=("scan",)))

    message = str(caught.value)
    assert message.endswith("got '" + "9" * 40 + "'…")
    assert len(message) < 200


def test_an_unclosed_quote_is_reported_where_its_record_starts(
    tmp_path: Path,
) -> None:
    rows = [ROWS[0], '22,"tcp,80,0.01,probe,scan', ROWS[2], ROWS[3]]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    with pytest.raises(
        DataFormatError, match=r"unclosed quote starting at or after line 3;"
    ):
        load_flow_csv(path, MAPPING)


def test_a_field_over_the_csv_limit_is_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'{HEADER}\n443,tcp,1,0.5,"{"n" * 200_000}",benign\n')

    with pytest.raises(
        DataFormatError, match=r"line 2: a field is longer than the limit of 131,072"
    ):
        load_flow_csv(path, MAPPING)


# --- mapping files -------------------------------------------------------------------


def test_a_mapping_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'label_column = "label"\nattack_values = ["scan", 7]\n'
        'categorical_columns = ["proto"]\ndrop_columns = ["note"]\n',
        "map.toml",
    )

    mapping = read_mapping_file(path)

    assert mapping.attack_values == ("scan", "7")
    assert mapping.categorical_columns == ("proto",)
    assert mapping.drop_columns == ("note",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'label_column = "label"\nattack_values = "attack"\n',
            r'attack_values must be a list, e\.g\. attack_values = \["attack"\]; '
            r"got the string 'attack'",
        ),
        (
            'label_column = "label"\nattack_values = ["a"]\n'
            'categorical_columns = "proto"\n',
            r"categorical_columns must be a list, .* got the string 'proto'",
        ),
        (
            'label_column = "label"\nnormal_values = [["ok"]]\n',
            r"normal_values must be a list of strings; got",
        ),
        (
            'label_column = 5\nattack_values = ["a"]\n',
            r"label_column must be the name of the label column.*; got 5",
        ),
        ('label = "x"\n', r"unknown key 'label' in mapping file .*map\.toml"),
        (
            'label_column = "label"\nattack_values = ["a"]\nnormal_values = ["b"]\n',
            r"map\.toml: give exactly one of attack_values and normal_values",
        ),
        ("label_column = \n", r"map\.toml is not valid TOML"),
    ],
)
def test_mapping_file_mistakes_name_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text, "map.toml")

    with pytest.raises(ConfigError, match=message):
        read_mapping_file(path)


def test_unreadable_mapping_files_are_one_line_errors(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'label_column = "\xff"\nattack_values = ["a"]\n')

    with pytest.raises(ConfigError, match=r"latin\.toml is not UTF-8 text: .*16"):
        read_mapping_file(latin)
    with pytest.raises(ConfigError, match=r"mapping file .*nope\.toml does not"):
        read_mapping_file(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"cannot read mapping file .*: Is a dir"):
        read_mapping_file(tmp_path)


# --- label checks --------------------------------------------------------------------


def test_attack_values_that_match_nothing_are_refused_with_what_is_there(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    mapping = CsvMapping(
        label_column="label",
        attack_values=("Scan", "brute"),
        categorical_columns=("proto",),
        drop_columns=("note",),
    )
    dataset = load_flow_csv(path, mapping)

    with pytest.raises(InputError) as caught:
        check_labels(dataset, mapping, "flows.csv")

    assert str(caught.value) == (
        "flows.csv: no row's 'label' value is one of attack_values ['Scan', "
        "'brute']; the column holds 'benign' (2), 'bruteforce' (1), 'scan' (1) "
        "(values are compared exactly, case included)"
    )


def test_normal_values_that_match_nothing_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    mapping = CsvMapping(
        label_column="label",
        normal_values=("normal",),
        categorical_columns=("proto",),
        drop_columns=("note",),
    )

    with pytest.raises(InputError, match=r"no row's 'label' value is one of normal"):
        check_labels(load_flow_csv(path, mapping), mapping, "flows.csv")


def test_one_class_is_refused_only_for_training(tmp_path: Path) -> None:
    path = write(tmp_path, "x,label\n" + "".join(f"{i},scan\n" for i in range(30)))
    mapping = CsvMapping(label_column="label", attack_values=("scan",))
    dataset = load_flow_csv(path, mapping)

    check_labels(dataset, mapping, "flows.csv")
    with pytest.raises(
        InputError,
        match=r"every row's 'label' value is one of attack_values \['scan'\], so "
        r"there is no normal traffic to learn from; the column holds 'scan' \(30\)",
    ):
        check_labels(dataset, mapping, "flows.csv", both_classes=True)


def test_the_ten_most_common_label_values_are_listed(tmp_path: Path) -> None:
    rows = "".join(f"{i},v{i % 12}\n" for i in range(12 * 5 + 3))
    path = write(tmp_path, "x,label\n" + rows)
    mapping = CsvMapping(label_column="label", attack_values=("attack",))

    with pytest.raises(InputError) as caught:
        check_labels(load_flow_csv(path, mapping), mapping, "flows.csv")

    listed = str(caught.value).split("the column holds ")[1]
    assert listed.startswith("'v0' (6), 'v1' (6), 'v2' (6), 'v10' (5)")
    assert listed.count("(5)") == 7 and "… 12 distinct values in all" in listed


def test_a_header_only_file_has_no_rows_to_label(tmp_path: Path) -> None:
    dataset = load_flow_csv(write(tmp_path, HEADER + "\n"), MAPPING)

    with pytest.raises(InputError, match=r"flows\.csv has no data rows, only a head"):
        check_labels(dataset, MAPPING, "flows.csv")
