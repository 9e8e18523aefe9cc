"""The agent's local data: partitions, synthetic clouds, mapped CSV, hold-out split."""

from pathlib import Path

import numpy as np
import pytest

from fedguard.client.data import DataSource, Partition, load_local_data
from fedguard.errors import ConfigError, InputError

NSL_KDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsl-kdd"


@pytest.mark.parametrize(
    ("text", "strategy", "alpha"),
    [
        ("iid", "iid", 0.5),
        ("dirichlet:0.3", "dirichlet", 0.3),
        ("by-family", "family", 0.5),
    ],
)
def test_partition_parsing(text: str, strategy: str, alpha: float) -> None:
    partition = Partition.parse(text)

    assert (partition.strategy, partition.alpha) == (strategy, alpha)
    assert str(partition) == text


@pytest.mark.parametrize(
    "text", ["random", "dirichlet:0", "dirichlet:x", "dirichlet:-1"]
)
def test_bad_partitions_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="partition must be iid, dirichlet:ALPHA"):
        Partition.parse(text)


def test_index_must_be_one_of_the_clients() -> None:
    with pytest.raises(ConfigError, match=r"index must be in \[0, 2\]"):
        DataSource(dataset="synthetic", index=3, clients=3)


def test_synthetic_clouds_are_different_and_reproducible() -> None:
    first = load_local_data(DataSource("synthetic", index=0, clients=2, rows=500))
    again = load_local_data(DataSource("synthetic", index=0, clients=2, rows=500))
    other = load_local_data(DataSource("synthetic", index=1, clients=2, rows=500))

    assert np.array_equal(first.train.numeric, again.train.numeric)
    assert first.train.num_attacks != other.train.num_attacks
    assert len(first.train) + len(first.holdout) == 500
    assert len(first.holdout) == 50


@pytest.mark.skipif(not NSL_KDD.is_dir(), reason="NSL-KDD is not available")
def test_nsl_kdd_parts_are_disjoint_and_cover_the_file() -> None:
    parts = [
        load_local_data(
            DataSource(
                "nsl-kdd",
                index=index,
                clients=3,
                seed=4,
                data_dir=NSL_KDD,
                data_file="KDDTrain+_20Percent.txt",
                holdout=0.0,
            )
        ).train
        for index in range(3)
    ]

    assert sum(len(part) for part in parts) == 25192
    assert parts[0].families is not None


def test_mapped_csv(tmp_path: Path) -> None:
    data = tmp_path / "flows.csv"
    rows = ["bytes,proto,verdict"] + [
        f"{100 * i},{'tcp' if i % 2 else 'udp'},{'bad' if i % 3 == 0 else 'ok'}"
        for i in range(30)
    ]
    data.write_text("\n".join(rows) + "\n")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        'label_column = "verdict"\n'
        'normal_values = ["ok"]\n'
        'categorical_columns = ["proto"]\n'
    )

    local = load_local_data(
        DataSource("csv", data_file=str(data), mapping_file=mapping, holdout=0.2)
    )

    assert len(local.train) == 24 and local.train.categorical_columns == ("proto",)
    assert local.train.num_attacks + local.holdout.num_attacks == 10


def test_mapping_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('label = "verdict"\n')

    with pytest.raises(ConfigError, match="unknown key 'label'"):
        load_local_data(DataSource("csv", data_file="x.csv", mapping_file=mapping))


def write_flows(tmp_path: Path, rows: int, mapping: str) -> tuple[Path, Path]:
    data = tmp_path / "flows.csv"
    data.write_text(
        "bytes,verdict\n"
        + "".join(f"{i},{'bad' if i % 3 else 'ok'}\n" for i in range(rows))
    )
    mapping_file = tmp_path / "mapping.toml"
    mapping_file.write_text(mapping)
    return data, mapping_file


def test_a_file_without_rows_is_refused_naming_it(tmp_path: Path) -> None:
    data, mapping = write_flows(
        tmp_path, 0, 'label_column = "verdict"\nattack_values = ["bad"]\n'
    )

    with pytest.raises(InputError, match=r"data file .*flows\.csv has no data rows"):
        load_local_data(DataSource("csv", data_file=str(data), mapping_file=mapping))


def test_a_mapping_that_matches_no_row_is_refused(tmp_path: Path) -> None:
    data, mapping = write_flows(
        tmp_path, 30, 'label_column = "verdict"\nattack_values = ["Bad"]\n'
    )

    with pytest.raises(
        InputError,
        match=r"flows\.csv: no row's 'verdict' value is one of attack_values "
        r"\['Bad'\]; the column holds 'bad' \(20\), 'ok' \(10\)",
    ):
        load_local_data(DataSource("csv", data_file=str(data), mapping_file=mapping))


def test_a_string_where_the_mapping_needs_a_list_is_refused(tmp_path: Path) -> None:
    data, mapping = write_flows(
        tmp_path, 30, 'label_column = "verdict"\nattack_values = "bad"\n'
    )

    with pytest.raises(ConfigError, match="attack_values must be a list"):
        load_local_data(DataSource("csv", data_file=str(data), mapping_file=mapping))


def test_a_holdout_that_leaves_no_training_rows_is_refused(tmp_path: Path) -> None:
    data, mapping = write_flows(
        tmp_path, 1, 'label_column = "verdict"\nnormal_values = ["ok"]\n'
    )

    with pytest.raises(
        ConfigError, match=r"holdout 0\.9 leaves no training rows of the 1"
    ):
        load_local_data(
            DataSource("csv", data_file=str(data), mapping_file=mapping, holdout=0.9)
        )
