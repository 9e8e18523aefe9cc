"""The NSL-KDD intrusion detection benchmark.

NSL-KDD (M. Tavallaee, E. Bagheri, W. Lu and A. Ghorbani, "A Detailed Analysis of
the KDD CUP 99 Data Set", IEEE CISDA 2009) is a cleaned version of the KDD Cup 1999
data. Each file is a CSV without a header: 41 connection features, the attack name
(``normal`` for benign traffic) and a difficulty level (0-21). The usual protocol is
to train on ``KDDTrain+`` and test on ``KDDTest+``, whose attack mix differs (17
attack names occur only in the test file), which makes it a fair test of how a
model generalises to attacks it has not seen.
"""

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedguard.data._tabular import OnError, parse_columns, read_text, split_records
from fedguard.data.dataset import NORMAL, UNKNOWN_FAMILY, Dataset, string_matrix
from fedguard.data.schema import CategoricalFeature, FeatureSchema, NumericFeature
from fedguard.errors import InputError

TRAIN_FILE = "KDDTrain+.txt"
TEST_FILE = "KDDTest+.txt"
TRAIN_20_PERCENT_FILE = "KDDTrain+_20Percent.txt"

FEATURE_COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes",
    "land", "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in",
    "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate",
    "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count",
    "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate", "dst_host_srv_serror_rate", "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
)  # fmt: skip
"""The 41 features, in file order (names from the official ARFF header)."""

ALL_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, "label", "difficulty")
CATEGORICAL_COLUMNS: tuple[str, ...] = ("protocol_type", "service", "flag")
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    name for name in FEATURE_COLUMNS if name not in CATEGORICAL_COLUMNS
)

# Columns whose values span orders of magnitude (byte counts, durations, unbounded
# content counters) get log1p before standardisation. Window counts (at most 511 or
# 255), small counters, flags and rates are already on a bounded scale.
LOG1P_COLUMNS: frozenset[str] = frozenset(
    {
        "duration", "src_bytes", "dst_bytes", "hot", "num_compromised",
        "num_root", "num_file_creations", "num_access_files",
    }
)  # fmt: skip

# Every value in KDDTrain+ and KDDTest+ (the test file adds none).
PROTOCOLS: tuple[str, ...] = ("icmp", "tcp", "udp")
SERVICES: tuple[str, ...] = (
    "IRC", "X11", "Z39_50", "aol", "auth", "bgp", "courier", "csnet_ns", "ctf",
    "daytime", "discard", "domain", "domain_u", "echo", "eco_i", "ecr_i", "efs",
    "exec", "finger", "ftp", "ftp_data", "gopher", "harvest", "hostnames", "http",
    "http_2784", "http_443", "http_8001", "imap4", "iso_tsap", "klogin", "kshell",
    "ldap", "link", "login", "mtp", "name", "netbios_dgm", "netbios_ns",
    "netbios_ssn", "netstat", "nnsp", "nntp", "ntp_u", "other", "pm_dump", "pop_2",
    "pop_3", "printer", "private", "red_i", "remote_job", "rje", "shell", "smtp",
    "sql_net", "ssh", "sunrpc", "supdup", "systat", "telnet", "tftp_u", "tim_i",
    "time", "urh_i", "urp_i", "uucp", "uucp_path", "vmnet", "whois",
)  # fmt: skip
FLAGS: tuple[str, ...] = (
    "OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH",
)  # fmt: skip

FAMILIES: tuple[str, ...] = ("DoS", "Probe", "R2L", "U2R")

# The standard attack-to-family mapping used with NSL-KDD, including the names that
# occur only in KDDTest+ (apache2, mailbomb, processtable, udpstorm, worm, mscan,
# saint, httptunnel, named, sendmail, snmpgetattack, snmpguess, xlock, xsnoop, ps,
# sqlattack, xterm).
ATTACK_FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        ("apache2", "back", "land", "mailbomb", "neptune", "pod", "processtable",
         "smurf", "teardrop", "udpstorm", "worm"),
        "DoS",
    ),
    **dict.fromkeys(
        ("ipsweep", "mscan", "nmap", "portsweep", "saint", "satan"), "Probe"
    ),
    **dict.fromkeys(
        ("ftp_write", "guess_passwd", "httptunnel", "imap", "multihop", "named",
         "phf", "sendmail", "snmpgetattack", "snmpguess", "spy", "warezclient",
         "warezmaster", "xlock", "xsnoop"),
        "R2L",
    ),
    **dict.fromkeys(
        ("buffer_overflow", "loadmodule", "perl", "ps", "rootkit", "sqlattack",
         "xterm"),
        "U2R",
    ),
}  # fmt: skip


def attack_family(attack_type: str) -> str:
    """The family of one NSL-KDD label; ``"unknown"`` for a name not in the mapping."""
    if attack_type == NORMAL:
        return NORMAL
    return ATTACK_FAMILIES.get(attack_type, UNKNOWN_FAMILY)


def attack_families(attack_types: NDArray[np.str_]) -> NDArray[np.str_]:
    """Map every label of an array to its family (vectorised over distinct names)."""
    names, inverse = np.unique(attack_types, return_inverse=True)
    mapped = np.array([attack_family(str(name)) for name in names], dtype=np.str_)
    return mapped[inverse.reshape(-1)].astype(np.str_)


def load_nsl_kdd(
    path: str | Path, *, families: bool = False, on_error: OnError = "raise"
) -> Dataset:
    """Load one NSL-KDD file (plain or gzip-compressed).

    Parameters
    ----------
    path
        A ``KDDTrain+``/``KDDTest+``-style file: 43 comma-separated fields, no header.
    families
        Also fill :attr:`Dataset.families` (DoS, Probe, R2L, U2R, ``"unknown"`` for
        an attack name the mapping does not know, ``"normal"``).
    on_error
        ``"raise"`` (default): a malformed row raises :class:`DataFormatError`
        naming the file, line and column. ``"skip"``: such rows are dropped and
        counted in :attr:`Dataset.skipped_rows`.
    """
    path = Path(path)
    source = str(path)
    records = split_records(
        read_text(path),
        source,
        expected_columns=len(ALL_COLUMNS),
        has_header=False,
        on_error=on_error,
    )

    numeric = [ALL_COLUMNS.index(name) for name in (*NUMERIC_COLUMNS, "difficulty")]
    text = [ALL_COLUMNS.index(name) for name in (*CATEGORICAL_COLUMNS, "label")]
    parsed = parse_columns(
        records,
        numeric=numeric,
        text=text,
        names=ALL_COLUMNS,
        source=source,
        on_error=on_error,
    )

    attack_types = parsed.text[-1]
    return Dataset(
        numeric_columns=NUMERIC_COLUMNS,
        numeric=np.ascontiguousarray(parsed.numeric[:, :-1]),
        categorical_columns=CATEGORICAL_COLUMNS,
        categorical=string_matrix(parsed.text[:-1], len(attack_types)),
        labels=(attack_types != NORMAL).astype(np.int8),
        attack_types=attack_types,
        families=attack_families(attack_types) if families else None,
        name=path.name,
        skipped_rows=parsed.skipped,
    )


def find_nsl_kdd_file(data_dir: str | Path, file_name: str) -> Path:
    """The path of ``file_name`` in ``data_dir``, plain or with a ``.gz`` suffix."""
    directory = Path(data_dir)
    for candidate in (directory / file_name, directory / f"{file_name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"NSL-KDD file {file_name} (or {file_name}.gz) not found in {directory}"
    )


def load_nsl_kdd_split(
    data_dir: str | Path, *, families: bool = False, on_error: OnError = "raise"
) -> tuple[Dataset, Dataset]:
    """Load the standard split: ``KDDTrain+`` for training, ``KDDTest+`` for testing."""
    train = load_nsl_kdd(
        find_nsl_kdd_file(data_dir, TRAIN_FILE), families=families, on_error=on_error
    )
    test = load_nsl_kdd(
        find_nsl_kdd_file(data_dir, TEST_FILE), families=families, on_error=on_error
    )
    return train, test


def nsl_kdd_schema() -> FeatureSchema:
    """The unfitted NSL-KDD feature schema (fixed vocabularies, per-column transforms).

    Fit it with :meth:`FeatureSchema.fit` (one party) or from summed statistics
    (:meth:`FeatureSchema.with_statistics`) before transforming rows.
    """
    numeric = tuple(
        NumericFeature(name, "log1p" if name in LOG1P_COLUMNS else "identity")
        for name in NUMERIC_COLUMNS
    )
    categorical = (
        CategoricalFeature("protocol_type", PROTOCOLS),
        CategoricalFeature("service", SERVICES),
        CategoricalFeature("flag", FLAGS),
    )
    return FeatureSchema(name="nsl-kdd", numeric=numeric, categorical=categorical)
