"""Key generation, key files, fingerprints and the secrecy of private keys."""

import json
import logging
import pickle
import stat
from pathlib import Path

import gmpy2
import pytest

from fedguard.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from fedguard.errors import ConfigError, CryptoError, KeyMismatchError


def test_default_key_is_2048_bits_with_djn_base(private_key_2048: PrivateKey) -> None:
    public_key = private_key_2048.public_key
    p, q = private_key_2048.p, private_key_2048.q

    assert public_key.bits == 2048
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q)
    assert p % 4 == 3 and q % 4 == 3
    assert gmpy2.gcd(p - 1, q - 1) == 2
    # hs is an n-th residue: raising it to λ(n) gives 1 modulo n².
    lam = gmpy2.lcm(p - 1, q - 1)
    assert gmpy2.powmod(public_key.hs, lam, public_key.n_square) == 1
    assert len(public_key.fingerprint) == 64


def test_3072_bit_keys_are_available() -> None:
    assert generate_private_key(3072).public_key.bits == 3072


@pytest.mark.parametrize("bits", [512, 1024, 2047, 2560])
def test_sizes_outside_the_choices_are_refused(bits: int) -> None:
    with pytest.raises(ConfigError, match=r"key size must be .*2048, 3072, 4096"):
        generate_private_key(bits)


def test_small_keys_need_the_test_switch(small_keys_allowed: None) -> None:
    assert generate_private_key(512).public_key.bits == 512


def test_small_public_key_is_refused_without_the_switch(
    small_private_key: PrivateKey,
) -> None:
    data = small_private_key.public_key.to_dict()

    with pytest.raises(ConfigError, match="at least 2048 bits"):
        PublicKey.from_dict(data)


def test_private_key_file_is_0600_and_round_trips(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "keys" / "private.json"

    save_private_key(private_key_2048, path)
    loaded = load_private_key(path, private_key_2048.public_key.fingerprint)
    loaded_again = load_private_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loaded == private_key_2048 == loaded_again
    assert loaded.public_key == private_key_2048.public_key


def test_public_key_file_round_trips_with_pinned_fingerprint(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    public_key = private_key_2048.public_key
    path = tmp_path / "public.json"

    save_public_key(public_key, path)

    assert load_public_key(path, public_key.fingerprint) == public_key
    with pytest.raises(KeyMismatchError, match="fingerprint mismatch"):
        load_public_key(path, "00" * 32)


def test_wrong_fingerprint_in_private_key_file_is_refused(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "private.json"
    save_private_key(private_key_2048, path)
    document = json.loads(path.read_text())
    document["fingerprint"] = "ab" * 32
    path.write_text(json.dumps(document))

    with pytest.raises(KeyMismatchError, match="does not match its stored fingerprint"):
        load_private_key(path)


def test_expected_fingerprint_must_match(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "private.json"
    save_private_key(private_key_2048, path)

    with pytest.raises(KeyMismatchError, match="not the expected"):
        load_private_key(path, "cd" * 32)


def test_tampered_base_changes_the_fingerprint(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "private.json"
    save_private_key(private_key_2048, path)
    document = json.loads(path.read_text())
    document["hs"] = format(int(document["hs"], 16) + 2, "x")
    path.write_text(json.dumps(document))
    path.chmod(0o600)

    with pytest.raises((KeyMismatchError, CryptoError)):
        load_private_key(path)


def test_private_key_file_readable_by_others_is_refused(
    private_key_2048: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "private.json"
    save_private_key(private_key_2048, path)
    path.chmod(0o644)

    with pytest.raises(CryptoError, match="chmod 600"):
        load_private_key(path)


def test_missing_and_foreign_key_files_give_clear_errors(
    tmp_path: Path,
) -> None:
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    foreign.chmod(0o600)

    with pytest.raises(ConfigError, match="does not exist"):
        load_private_key(tmp_path / "absent.json")
    with pytest.raises(CryptoError, match="is not a fedguard-private-key file"):
        load_private_key(foreign)


def test_secrets_never_appear_in_repr_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fedguard")
    private_key = generate_private_key(2048)
    save_private_key(private_key, tmp_path / "k.json")
    load_private_key(tmp_path / "k.json")

    shown = repr(private_key) + str(private_key) + repr(private_key.public_key)
    shown += caplog.text
    for secret in (private_key.p, private_key.q):
        assert format(secret, "x") not in shown
        assert str(secret) not in shown
    assert "PrivateKey(bits=2048" in repr(private_key)


def test_private_keys_cannot_be_pickled(private_key_2048: PrivateKey) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(private_key_2048)


def test_factors_must_match_the_public_key(private_key_2048: PrivateKey) -> None:
    public_key = private_key_2048.public_key

    with pytest.raises(CryptoError, match="do not match"):
        PrivateKey(public_key, private_key_2048.p, private_key_2048.p + 2)
