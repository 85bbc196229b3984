"""parse_certificate_input: turn Management Add input into a checked ParsedCertificate."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
    pkcs7,
)

from producer.codes import ResultCode

from . import der, hostcompat
from . import pkcs12_info as p12
from .errors import CertificateInputError
from .model import WINDOWS_MAX_PBKDF_ITERATIONS, InputFormat, ParsedCertificate, PbeInfo
from .pkcs12_writer import legacy_pkcs12
from .sniff import CERT_LABELS, KEY_LABELS, PKCS7_LABELS, PKCS12_LABELS, PemBlock, decode


def thumbprint_of(cert_der: bytes) -> str:
    """Windows thumbprint: SHA-1 over the certificate DER, 40 upper-case hex digits."""
    return hashlib.sha1(cert_der, usedforsecurity=False).hexdigest().upper()


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


def _describe_public_key(cert: x509.Certificate) -> tuple[str, int | None]:
    try:
        pub = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return cert.public_key_algorithm_oid.dotted_string, None
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA", pub.key_size
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "ECDSA", pub.curve.key_size
    if isinstance(pub, dsa.DSAPublicKey):
        return "DSA", pub.key_size
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519", None
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448", None
    return type(pub).__name__, None


def _cert_spki(cert: x509.Certificate) -> bytes | None:
    try:
        return _spki(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return None


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "<empty subject>"
    except ValueError:
        return "<unreadable subject>"


# --- leaf and chain -----------------------------------------------------------------------------
def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Parent's subject is child's issuer (and key identifiers agree where both are present)."""
    if child.issuer != parent.subject:
        return False
    aki, ski = _aki(child), _ski(parent)
    return aki is None or ski is None or aki == ski


@dataclass(frozen=True)
class _Cert:
    der: bytes
    cert: x509.Certificate
    friendly_name: str | None = None


def _dedupe_certs(certs: Sequence[_Cert]) -> list[_Cert]:
    seen: set[bytes] = set()
    out: list[_Cert] = []
    for c in certs:
        if c.der not in seen:
            seen.add(c.der)
            out.append(c)
    return out


def _end_entities(certs: Sequence[_Cert]) -> list[_Cert]:
    """Certificates that issued no other certificate in the set."""
    return [c for c in certs if not any(o.der != c.der and _issued_by(o.cert, c.cert) for o in certs)]


def _ambiguous(candidates: Sequence[_Cert], why: str) -> CertificateInputError:
    names = "; ".join(_subject(c.cert) for c in candidates) or "<none>"
    return CertificateInputError(
        ResultCode.AMBIGUOUS_LEAF,
        f"{why}, so the certificate to install cannot be chosen. Candidates: {names}. "
        "Send a file that holds one end-entity certificate (with its private key, if it has one).",
    )


def _order_chain(leaf: _Cert, others: Sequence[_Cert]) -> list[bytes]:
    """Issuer of the leaf, its issuer, ... then the remaining certificates in input order."""
    remaining = [c for c in others if c.der != leaf.der]
    ordered: list[_Cert] = []
    current = leaf
    while True:
        if current.cert.issuer == current.cert.subject and current is not leaf:
            break  # reached a self-issued root
        parent = next((c for c in remaining if _issued_by(current.cert, c.cert)), None)
        if parent is None:
            break
        ordered.append(parent)
        remaining.remove(parent)
        current = parent
    return [c.der for c in ordered + remaining]


def _select(
    certs: Sequence[_Cert], keys: Sequence[PrivateKeyTypes], source: str
) -> tuple[_Cert, PrivateKeyTypes | None]:
    """Pick the leaf (the certificate of the private key, or the single end-entity)."""
    unique_keys: dict[bytes, PrivateKeyTypes] = {}
    for key in keys:
        unique_keys.setdefault(_spki(key.public_key()), key)
    if len(unique_keys) > 1:
        raise CertificateInputError(
            ResultCode.PFX_MULTIPLE_KEYS,
            f"the {source} holds {len(unique_keys)} different private keys; Windows would import only one "
            "of them. Send a file with exactly one private key and its certificate.",
        )
    if not certs:
        if unique_keys:
            raise CertificateInputError(
                ResultCode.PFX_KEY_WITHOUT_CERTIFICATE,
                f"the {source} holds a private key but no certificate. "
                "Send the key together with its certificate.",
            )
        raise CertificateInputError(ResultCode.INVALID_CERTIFICATE_DATA, f"the {source} holds no certificate")
    if unique_keys:
        spki, key = next(iter(unique_keys.items()))
        matching = [c for c in certs if _cert_spki(c.cert) == spki]
        if not matching:
            raise CertificateInputError(
                ResultCode.PFX_KEY_WITHOUT_CERTIFICATE,
                f"the {source} holds a private key that matches none of its {len(certs)} certificate(s) "
                f"({'; '.join(_subject(c.cert) for c in certs)}). Send the key with its own certificate.",
            )
        if len(matching) == 1:
            return matching[0], key
        ends = _end_entities(matching)
        if len(ends) == 1:
            return ends[0], key
        raise _ambiguous(matching, f"the {source} holds {len(matching)} certificates for its private key")
    ends = _end_entities(certs)
    if len(ends) == 1:
        return ends[0], None
    if not ends:
        raise _ambiguous(certs, f"the {source} has no private key and its certificates all issue each other")
    raise _ambiguous(ends, f"the {source} has no private key and {len(ends)} end-entity certificates")


def _build(
    leaf: _Cert,
    certs: Sequence[_Cert],
    key: PrivateKeyTypes | None,
    input_format: InputFormat,
    pkcs12_bytes: bytes | None,
    pbe: PbeInfo | None,
) -> ParsedCertificate:
    algorithm, size = _describe_public_key(leaf.cert)
    return ParsedCertificate(
        thumbprint=thumbprint_of(leaf.der),
        leaf_der=leaf.der,
        has_private_key=key is not None,
        chain_der=_order_chain(leaf, certs),
        input_format=input_format,
        pkcs12_bytes=pkcs12_bytes,
        key_algorithm=algorithm,
        key_size=size,
        pbe=pbe,
        leaf_subject=_subject(leaf.cert),
    )


def _load_certs(ders: Sequence[tuple[bytes, str | None]], source: str) -> list[_Cert]:
    out: list[_Cert] = []
    for n, (data, name) in enumerate(ders):
        try:
            out.append(_Cert(data, x509.load_der_x509_certificate(data), name))
        except ValueError as exc:
            raise CertificateInputError(
                ResultCode.INVALID_CERTIFICATE_DATA,
                f"certificate {n + 1} in the {source} is not a valid X.509 certificate ({exc})",
            ) from exc
    return _dedupe_certs(out)


# --- PKCS#12 ------------------------------------------------------------------------------------
#: Safety cap on the key-derivation work one input may cause on the worker (all items together).
MAX_TOTAL_ITERATIONS = 10 * WINDOWS_MAX_PBKDF_ITERATIONS


class _Budget:
    """Counts derivations; refuses files that would make the worker derive keys for too long."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, what: str, iterations: int) -> None:
        _check_iterations(what, iterations)
        self.total += iterations
        if self.total > MAX_TOTAL_ITERATIONS:
            raise CertificateInputError(
                ResultCode.PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT,
                f"the PKCS#12 file needs more than {MAX_TOTAL_ITERATIONS} key-derivation iterations in total "
                f"(limit per item {WINDOWS_MAX_PBKDF_ITERATIONS}); re-export it with fewer items or "
                "iterations.",
            )


def _check_iterations(what: str, iterations: int) -> None:
    if iterations > WINDOWS_MAX_PBKDF_ITERATIONS:
        raise CertificateInputError(
            ResultCode.PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT,
            f"the PKCS#12 {what} uses {iterations} key-derivation iterations; Windows refuses more than "
            f"{WINDOWS_MAX_PBKDF_ITERATIONS}. Re-export the file with fewer iterations (2048 is common).",
        )
    if iterations < 1:
        raise CertificateInputError(
            ResultCode.INVALID_CERTIFICATE_DATA, f"the PKCS#12 {what} has an iteration count of {iterations}"
        )


def _password_error(detail: str, hint: str = "") -> CertificateInputError:
    return CertificateInputError(
        ResultCode.PFX_PASSWORD_INCORRECT,
        f"the PKCS#12 password is incorrect ({detail}); check the password sent with the job.{hint}",
    )


def _none_empty_hint(password: str | None, works: bool) -> str:
    if not works:
        return ""
    if password is None:
        return ' This file uses an empty password; send "" (an empty string), not none.'
    return " This file has no password; send none (no password), not an empty string."


@dataclass(frozen=True)
class _Opened:
    structure: p12.Pkcs12Structure
    contents: p12.Pkcs12Contents
    certs: list[_Cert]
    keys: list[PrivateKeyTypes]
    pbe: PbeInfo


def _join(names: Sequence[str]) -> str:
    return " + ".join(dict.fromkeys(names))


def _pbe_info(structure: p12.Pkcs12Structure, contents: p12.Pkcs12Contents) -> PbeInfo:
    key_names = [s.name for s in contents.key_schemes] + (["none"] * bool(contents.plain_keys))
    cert_names = [s.name if s else "none" for s in contents.cert_schemes]
    encrypted = [c.encryption for c in structure.containers if c.encryption is not None]
    return PbeInfo(
        key_algorithm=_join(key_names) or "absent",
        cert_algorithm=_join(cert_names) or "absent",
        mac_algorithm=structure.mac.algorithm if structure.mac else "none",
        mac_iterations=structure.mac.iterations if structure.mac else None,
        key_iterations=max((s.iterations for s in contents.key_schemes), default=None),
        cert_iterations=max((s.iterations for s in encrypted), default=None),
    )


def _malformed(exc: p12.Pkcs12FormatError) -> CertificateInputError:
    """invalid_certificate_data for a PKCS#12 file that does not parse."""
    return CertificateInputError(ResultCode.INVALID_CERTIFICATE_DATA, f"the PKCS#12 file is malformed: {exc}")


def _unsupported(exc: p12.Pkcs12UnsupportedError, advice: str = "") -> CertificateInputError:
    """unsupported_certificate_format naming what the file uses; ``advice`` follows the sentence."""
    return CertificateInputError(
        ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
        f"the PKCS#12 file uses {exc}, which this worker cannot read{advice}",
    )


def _open_pkcs12(data: bytes, password: str | None) -> _Opened:
    try:
        structure = p12.read_structure(data)
    except p12.Pkcs12FormatError as exc:
        raise _malformed(exc) from exc
    except p12.Pkcs12UnsupportedError as exc:
        raise _unsupported(
            exc,
            ". Re-export it with password protection (e.g. AES-256 or 3DES) and an HMAC integrity check.",
        ) from exc
    # Limits first: nothing is derived from the password before they are checked.
    if structure.mac is not None:
        _check_iterations(f"integrity MAC ({structure.mac.algorithm})", structure.mac.iterations)
    for n, container in enumerate(structure.containers):
        if container.encryption is not None:
            _check_iterations(
                f"certificate container {n} ({container.encryption.name})", container.encryption.iterations
            )

    other = "" if password is None else None
    if structure.mac is not None and not p12.mac_matches(structure, password):
        hint = _none_empty_hint(password, password in (None, "") and p12.mac_matches(structure, other))
        raise _password_error("the integrity check (MAC) fails", hint)
    try:
        contents = p12.open_contents(structure, password, _Budget())
    except p12.Pkcs12PasswordError as exc:
        works = False
        if structure.mac is None and password in (None, ""):
            try:
                p12.open_contents(structure, other, _Budget())
                works = True
            except (p12.Pkcs12PasswordError, p12.Pkcs12FormatError, p12.Pkcs12UnsupportedError):
                works = False
        detail = (
            f"{exc}" if structure.mac is None else f"the MAC verifies but {exc}: the file uses two passwords"
        )
        raise _password_error(detail, _none_empty_hint(password, works)) from exc
    except p12.Pkcs12FormatError as exc:
        raise _malformed(exc) from exc
    except p12.Pkcs12UnsupportedError as exc:
        raise _unsupported(exc) from exc

    keys: list[PrivateKeyTypes] = []
    for n, bag in enumerate(contents.keys):
        try:
            keys.append(load_der_private_key(bag.pkcs8_der, password=None))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CertificateInputError(
                ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
                f"private key {n + 1} in the PKCS#12 file cannot be read ({type(exc).__name__}); "
                "use an RSA, ECDSA, DSA or EdDSA key",
            ) from exc
    certs = _load_certs([(c.der, c.friendly_name) for c in contents.certs], "PKCS#12 file")
    return _Opened(structure, contents, certs, keys, _pbe_info(structure, contents))


def _parse_pkcs12(
    data: bytes, password: str | None, os_build: int | None, rewrap_legacy: bool
) -> ParsedCertificate:
    opened = _open_pkcs12(data, password)
    leaf, key = _select(opened.certs, opened.keys, "PKCS#12 file")
    parsed = _build(leaf, opened.certs, key, "pkcs12", data, opened.pbe)
    if os_build is None or hostcompat.supports_pbes2(os_build) or not opened.pbe.uses_pbes2:
        return parsed
    if not rewrap_legacy:
        algs = _join(
            [
                a
                for a in (opened.pbe.key_algorithm, opened.pbe.cert_algorithm, opened.pbe.mac_algorithm)
                if a.startswith(("PBES2", "PBMAC1")) or " + PBES2" in a
            ]
        )
        raise CertificateInputError(
            ResultCode.PFX_ALGORITHM_UNSUPPORTED_BY_HOST,
            f"the PKCS#12 file is protected with {algs}, which {hostcompat.windows_name(os_build)} cannot "
            "import (PBES2/AES needs Windows Server 2019, build 17763, or later). Re-export it with "
            "pbeWithSHA1And3-KeyTripleDES-CBC and an HMAC-SHA1 MAC, or let the worker re-wrap it.",
        )
    friendly = leaf.friendly_name
    new_bytes = legacy_pkcs12(leaf.der, key, parsed.chain_der, password, friendly)
    check = _open_pkcs12(new_bytes, password)
    new_leaf, _ = _select(check.certs, check.keys, "re-wrapped PKCS#12 file")
    if new_leaf.der != leaf.der:  # pragma: no cover - defensive
        raise CertificateInputError(
            ResultCode.INVALID_CERTIFICATE_DATA, "re-wrapping changed the certificate"
        )
    return replace(parsed, pkcs12_bytes=new_bytes, pbe=check.pbe, rewrapped=True)


# --- DER / PKCS#7 / PEM -----------------------------------------------------------------------------
def _pkcs7_certs(data: bytes, source: str) -> list[_Cert]:
    try:
        loaded = pkcs7.load_der_pkcs7_certificates(data)
    except ValueError as exc:
        raise CertificateInputError(
            ResultCode.INVALID_CERTIFICATE_DATA,
            f"the {source} is not a readable PKCS#7 certificate bundle ({exc})",
        ) from exc
    return _dedupe_certs([_Cert(c.public_bytes(Encoding.DER), c) for c in loaded])


def _what_is(data: bytes) -> str:
    try:
        load_der_private_key(data, None)
        return "an unencrypted private key"
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        x509.load_der_x509_csr(data)
        return "a certificate signing request (CSR)"
    except ValueError:
        pass
    try:
        x509.load_der_x509_crl(data)
        return "a certificate revocation list (CRL)"
    except ValueError:
        pass
    return "a DER structure that is no certificate, PKCS#7 or PKCS#12"


def _parse_binary(
    data: bytes, password: str | None, os_build: int | None, rewrap_legacy: bool
) -> ParsedCertificate:
    try:
        top, _ = der.read_tlv(data)
        first = der.children(top)[0] if top.constructed and top.value else None
    except der.DerError as exc:
        raise CertificateInputError(
            ResultCode.INVALID_CERTIFICATE_DATA, f"the certificate input is not well-formed DER ({exc})"
        ) from exc
    if p12.looks_like_pkcs12(top):
        return _parse_pkcs12(data, password, os_build, rewrap_legacy)
    if first is not None and first.tag == der.TAG_OID:
        kind = der.oid(first, "ContentInfo")
        if kind == p12.OID_SIGNED_DATA:
            certs = _pkcs7_certs(data, "PKCS#7 input")
            leaf, _ = _select(certs, [], "PKCS#7 bundle")
            return _build(leaf, certs, None, "pkcs7", None, None)
        raise CertificateInputError(
            ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
            f"the input is a CMS/PKCS#7 object of type {kind}, not a certificate bundle (signedData)",
        )
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateInputError(
            ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
            f"the input is {_what_is(data)}. Send a certificate (DER/PEM), a PKCS#7 bundle, or a PKCS#12 "
            "file holding the certificate and its private key.",
        ) from None
    leaf = _Cert(data, cert)
    return _build(leaf, [leaf], None, "der", None, None)


def _load_pem_key(block: PemBlock, password: str | None) -> PrivateKeyTypes:
    encrypted = block.label == "ENCRYPTED PRIVATE KEY" or block.has_headers
    if encrypted and not password:
        raise CertificateInputError(
            ResultCode.PFX_PASSWORD_INCORRECT,
            "the PEM private key is encrypted but no password was given; send its password",
        )
    try:
        return load_pem_private_key(
            block.text.encode("ascii"), password.encode("utf-8") if encrypted and password else None
        )
    except ValueError as exc:
        if encrypted:
            raise CertificateInputError(
                ResultCode.PFX_PASSWORD_INCORRECT,
                "the PEM private key does not decrypt; check the password sent with the job",
            ) from exc
        raise CertificateInputError(
            ResultCode.INVALID_CERTIFICATE_DATA,
            f"the PEM block {block.label!r} is not a readable private key",
        ) from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateInputError(
            ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
            f"the PEM block {block.label!r} holds a private key this worker cannot read",
        ) from exc


def _parse_pem(
    blocks: Sequence[PemBlock], password: str | None, os_build: int | None, rewrap_legacy: bool
) -> ParsedCertificate:
    labels = [b.label for b in blocks]
    if any(label in PKCS12_LABELS for label in labels):
        if len(blocks) != 1:
            raise CertificateInputError(
                ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
                "a PEM-armoured PKCS#12 must be the only block in the input",
            )
        return _parse_pkcs12(blocks[0].der, password, os_build, rewrap_legacy)
    certs: list[_Cert] = []
    keys: list[PrivateKeyTypes] = []
    only_pkcs7 = True
    for block in blocks:
        if block.label in CERT_LABELS:
            only_pkcs7 = False
            certs.extend(_load_certs([(block.der, None)], "PEM input"))
        elif block.label in PKCS7_LABELS:
            certs.extend(_pkcs7_certs(block.der, "PEM PKCS#7 block"))
        elif block.label in KEY_LABELS:
            only_pkcs7 = False
            keys.append(_load_pem_key(block, password))
    if not certs and not keys:
        raise CertificateInputError(
            ResultCode.UNSUPPORTED_CERTIFICATE_FORMAT,
            f"the PEM input holds no certificate (blocks: {', '.join(labels)}). Send a certificate, a PKCS#7 "
            "bundle or a PKCS#12 file.",
        )
    certs = _dedupe_certs(certs)
    leaf, key = _select(certs, keys, "PEM input")
    input_format: InputFormat = "pkcs7" if only_pkcs7 else "pem"
    parsed = _build(leaf, certs, key, input_format, None, None)
    if key is None:
        return parsed
    # PEM keys never go to hosts as PEM: wrap them (same format as the legacy re-wrap).
    data = legacy_pkcs12(parsed.leaf_der, key, parsed.chain_der, password)
    return replace(parsed, pkcs12_bytes=data, pbe=_open_pkcs12(data, password).pbe)


def parse_certificate_input(
    data: bytes | str,
    password: str | None,
    *,
    os_build: int | None = None,
    rewrap_legacy: bool = False,
) -> ParsedCertificate:
    """Decode, check and understand Management Add input before any remote call.

    ``password``: None means "no password", "" means "empty password"; they differ for PKCS#12
    and exactly the one given is tried (the error message says when the other would work).
    A password sent with cert-only input (DER, PEM without a key, PKCS#7) is ignored.
    ``os_build``: the target's Windows build; below 17763 PBES2/AES-protected PKCS#12 files fail
    with ``pfx_algorithm_unsupported_by_host`` unless ``rewrap_legacy`` (then ``pkcs12_bytes``
    is a 3DES/SHA1 re-encoding protected by the same password).

    Raises CertificateInputError (``.code`` is a stable result code).
    """
    decoded = decode(data)
    if decoded.der is not None:
        return _parse_binary(decoded.der, password, os_build, rewrap_legacy)
    return _parse_pem(decoded.blocks, password, os_build, rewrap_legacy)
