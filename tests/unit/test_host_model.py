"""The simulated Windows host model: stores, seeding, persistence (real files, real crypto)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
import threading
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from simulator.config import DEFAULT_STORES, HostConfig, SeedSpec
from simulator.windows import (
    CertificateLoadError,
    HostStateError,
    StoreNotFoundError,
    WindowsHost,
    load_certificate_entries,
    load_certificates_from_path,
)

VECTORS = Path(cryptography_vectors.__path__[0])
PKCS12 = VECTORS / "pkcs12"
DER = serialization.Encoding.DER


def make_cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey | None = None,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A small EC certificate; self-signed unless ``issuer`` = (issuer CN, issuer key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    issuer_cn, issuer_key = issuer or (cn, key)
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def spki(obj: object) -> bytes:
    return obj.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def config(**kwargs: object) -> HostConfig:
    return HostConfig(name="WIN-SIM01", **kwargs)  # type: ignore[arg-type]


def test_new_host_has_default_stores_and_identity(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path / "h", config(os_build=17763))
    assert list(host.stores) == list(DEFAULT_STORES)
    assert host.name == "WIN-SIM01"
    assert host.os_build == 17763
    assert all(len(store) == 0 for store in host.stores.values())
    assert (tmp_path / "h" / "host.json").is_file()


def test_store_names_are_case_insensitive(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config())
    cert, _ = make_cert("case")
    host.add_certificate("my", cert.public_bytes(DER))
    assert host.get_store("My") is host.get_store("MY") is host.get_store("my")
    assert host.get_store("My").name == "My"  # type: ignore[union-attr]
    assert [e.thumbprint for e in host.certificates("mY")] == [sha1(cert.public_bytes(DER))]
    assert host.get_store("remote desktop") is host.get_store("Remote Desktop")
    assert host.get_store("My ") is None and host.get_store("My*") is None
    with pytest.raises(StoreNotFoundError):
        host.certificates("NoSuchStore")
    with pytest.raises(StoreNotFoundError):
        host.add_certificate("NoSuchStore", cert.public_bytes(DER))


def test_state_survives_reopen_and_seeds_apply_only_once(tmp_path: Path) -> None:
    seed_cert, _ = make_cert("seeded")
    seed_file = tmp_path / "seed.pem"
    seed_file.write_bytes(seed_cert.public_bytes(serialization.Encoding.PEM))
    cfg = config(seed=[SeedSpec(store="Root", path=seed_file)])
    state = tmp_path / "state"

    host = WindowsHost.open(state, cfg)
    assert [e.thumbprint for e in host.certificates("Root")] == [sha1(seed_cert.public_bytes(DER))]
    added, added_key = make_cert("added")
    host.add_certificate("My", added.public_bytes(DER), added_key, "Web server")
    host.remove_certificate("root", sha1(seed_cert.public_bytes(DER)).lower())
    host.create_store("Custom Store")

    reopened = WindowsHost.open(state, cfg)
    assert reopened.certificates("Root") == []  # the seed was not re-applied
    assert "Custom Store" in reopened.stores
    [entry] = reopened.certificates("My")
    assert entry.der == added.public_bytes(DER)
    assert entry.friendly_name == "Web server"
    assert entry.has_private_key and spki(entry.private_key) == spki(added_key)

    key_file = state / "keys" / f"{entry.thumbprint}.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "keys").stat().st_mode) == 0o700
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    # The removed seed's DER file was garbage-collected; no temp files were left behind.
    assert sorted(p.name for p in (state / "certs").iterdir()) == [f"{entry.thumbprint}.cer"]
    assert not [p for p in state.rglob("*.tmp")]


def test_missing_configured_store_is_added_on_reopen(tmp_path: Path) -> None:
    WindowsHost.open(tmp_path, config(stores=["My"]))
    host = WindowsHost.open(tmp_path, config(stores=["My", "Shadow"]))
    assert list(host.stores) == ["My", "Shadow"]


def test_corrupt_state_is_reported_not_reset(tmp_path: Path) -> None:
    WindowsHost.open(tmp_path, config())
    (tmp_path / "host.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(HostStateError, match=r"host\.json"):
        WindowsHost.open(tmp_path, config())


def test_tampered_certificate_file_is_detected(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config())
    cert, _ = make_cert("tamper")
    entry = host.add_certificate("My", cert.public_bytes(DER))
    other, _ = make_cert("other")
    (tmp_path / "certs" / f"{entry.thumbprint}.cer").write_bytes(other.public_bytes(DER))
    with pytest.raises(HostStateError, match="thumbprint"):
        WindowsHost.open(tmp_path, config())


def test_seed_pem_with_many_certificates(tmp_path: Path) -> None:
    certs = [make_cert(f"pem-{i}")[0] for i in range(3)]
    bundle = tmp_path / "chain.pem"
    pems = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    bundle.write_bytes(b"junk before\n" + b"\n".join(pems))
    host = WindowsHost.open(tmp_path / "s", config(seed=[SeedSpec(store="CA", path=bundle)]))
    assert {e.thumbprint for e in host.certificates("CA")} == {sha1(c.public_bytes(DER)) for c in certs}
    assert not any(e.has_private_key for e in host.certificates("CA"))


def test_seed_pem_attaches_matching_key(tmp_path: Path) -> None:
    cert, key = make_cert("with-key")
    other, _ = make_cert("no-key")
    pem = tmp_path / "pair.pem"
    pem.write_bytes(
        other.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    loaded = {sha1(der): k for der, k in load_certificates_from_path(pem)}
    assert loaded[sha1(other.public_bytes(DER))] is None
    assert spki(loaded[sha1(cert.public_bytes(DER))]) == spki(key)


def test_seed_der_file(tmp_path: Path) -> None:
    cert, _ = make_cert("der")
    path = tmp_path / "one.cer"
    path.write_bytes(cert.public_bytes(DER))
    host = WindowsHost.open(tmp_path / "s", config(seed=[SeedSpec(store="TrustedPeople", path=path)]))
    assert [e.der for e in host.certificates("TrustedPeople")] == [cert.public_bytes(DER)]


def test_seed_pkcs12_vectors_with_and_without_password(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config(seed=[
        SeedSpec(store="My", path=PKCS12 / "no-password.p12"),
        SeedSpec(store="WebHosting", path=PKCS12 / "name-all-pwd.p12", password="password"),
    ]))
    [entry] = host.certificates("My")
    assert entry.has_private_key and entry.friendly_name == "cryptography CA"
    assert spki(entry.private_key) == spki(entry.certificate())

    web = host.certificates("WebHosting")
    assert len(web) == 3
    with_key = [e for e in web if e.has_private_key]
    assert len(with_key) == 1  # the key goes to the certificate whose public key matches
    assert spki(with_key[0].private_key) == spki(with_key[0].certificate())
    assert {e.friendly_name for e in web} == {"name", "name2", "name3"}


def test_seed_pkcs12_wrong_password_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(CertificateLoadError, match="PKCS#12"):
        WindowsHost.open(tmp_path, config(seed=[SeedSpec(store="My", path=PKCS12 / "name-1-pwd.p12",
                                                         password="wrong")]))
    assert not (tmp_path / "host.json").exists()  # nothing persisted: the next open seeds again


def test_seed_generated_pkcs12_chain_key_goes_to_leaf(tmp_path: Path) -> None:
    ca, ca_key = make_cert("Test CA")
    leaf, leaf_key = make_cert("leaf.example", issuer=("Test CA", ca_key))
    pfx = pkcs12.serialize_key_and_certificates(
        b"web", leaf_key, leaf, [ca], serialization.BestAvailableEncryption(b"s3cret")
    )
    path = tmp_path / "leaf.pfx"
    path.write_bytes(pfx)
    entries = load_certificate_entries(path, "s3cret")
    by_thumb = {sha1(e.der): e for e in entries}
    leaf_entry = by_thumb[sha1(leaf.public_bytes(DER))]
    assert leaf_entry.friendly_name == "web"
    assert spki(leaf_entry.private_key) == spki(leaf_key)
    assert by_thumb[sha1(ca.public_bytes(DER))].private_key is None


def test_seed_directory_skips_unloadable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    a, _ = make_cert("a")
    b, _ = make_cert("b")
    (folder / "a.pem").write_bytes(a.public_bytes(serialization.Encoding.PEM))
    (folder / "readme.txt").write_text("not a certificate")
    (folder / "sub" / "b.cer").write_bytes(b.public_bytes(DER))
    caplog.set_level("INFO")
    flat = load_certificates_from_path(folder)
    assert [sha1(der) for der, _ in flat] == [sha1(a.public_bytes(DER))]
    assert "readme.txt" in caplog.text
    deep = load_certificates_from_path(folder, recursive=True)
    assert {sha1(der) for der, _ in deep} == {sha1(a.public_bytes(DER)), sha1(b.public_bytes(DER))}


def test_add_existing_certificate_inherits_absent_properties(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config())
    cert, key = make_cert("merge")
    der = cert.public_bytes(DER)
    host.add_certificate("My", der, key, "first")
    again = host.add_certificate("my", der)
    assert again.has_private_key and again.friendly_name == "first"
    renamed = host.add_certificate("My", der, friendly_name="second")
    assert renamed.friendly_name == "second" and renamed.has_private_key
    assert len(host.certificates("My")) == 1


def test_add_rejects_mismatched_key_and_garbage(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config())
    cert, _ = make_cert("mismatch")
    _, wrong = make_cert("wrong")
    with pytest.raises(ValueError, match="does not match"):
        host.add_certificate("My", cert.public_bytes(DER), wrong)
    with pytest.raises(ValueError):
        host.add_certificate("My", b"\x30\x03\x02\x01\x00")
    assert host.certificates("My") == []


def test_concurrent_changes_are_all_kept(tmp_path: Path) -> None:
    host = WindowsHost.open(tmp_path, config())
    certs = [make_cert(f"thread-{i}")[0] for i in range(24)]
    errors: list[BaseException] = []

    def add(chunk: list[x509.Certificate]) -> None:
        try:
            for cert in chunk:
                host.add_certificate("My", cert.public_bytes(DER))
                host.certificates("My")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(certs[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = {sha1(c.public_bytes(DER)) for c in certs}
    assert {e.thumbprint for e in WindowsHost.open(tmp_path, config()).certificates("My")} == expected
    index = json.loads((tmp_path / "host.json").read_text())
    assert len(next(s for s in index["stores"] if s["name"] == "My")["certificates"]) == 24
