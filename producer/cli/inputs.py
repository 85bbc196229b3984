"""Reading certificate and secret files given on the command line."""

from __future__ import annotations

import base64
import binascii

from cryptography import x509

from producer.certinput import CertificateInputError, parse_certificate_input
from producer.cli.base import UsageProblemError, _strip_line_end
from producer.codes import ResultCode


def _read_secret_file(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblemError(f"certificate.password ({option}): cannot read {path!r}: {exc}") from None
    return _strip_line_end(text)


def _read_certificate_file(path: str, field: str = "certificate", option: str = "--certificate") -> bytes:
    try:
        with open(path, "rb") as handle:
            contents = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageProblemError(f"{field} ({option}): cannot read {path!r}: {reason}") from None
    if not contents.strip(b"\x00 \t\r\n"):
        raise UsageProblemError(f"{field} ({option}): {path!r} is empty")
    return contents


def _signed_certificate_text(path: str, field: str, option: str) -> str:
    """A reenrollment_complete certificate field from a file: PEM text as it is (one or more
    certificates), base64 DER as it is, binary DER as base64.

    The file is parsed here, so a file that is not an X.509 certificate (PKCS#12, PKCS#7, a CSR)
    fails before anything is sent; a PEM file holding a private key is refused (the key of a
    reenrolled certificate stays on the host, and this field travels unencrypted).
    """
    contents = _read_certificate_file(path, field, option)
    expected = "; give the issued X.509 certificate as PEM or DER (.cer, .crt, .pem)"
    if b"-----BEGIN" in contents:
        try:
            text = contents.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UsageProblemError(f"{field} ({option}): {path!r} is not PEM text{expected}") from None
        if "PRIVATE KEY-----" in text:
            raise UsageProblemError(
                f"{field} ({option}): {path!r} contains a private key; give the certificate alone"
                " (the pending key is already on the host)"
            )
        try:
            x509.load_pem_x509_certificates(text.encode("utf-8"))
        except ValueError:
            raise UsageProblemError(
                f"{field} ({option}): {path!r} has no PEM CERTIFICATE block{expected}"
            ) from None
        return text
    der = contents
    text_form: str | None = None
    try:
        ascii_text = contents.decode("ascii")
        der = base64.b64decode("".join(ascii_text.split()), validate=True)
        text_form = ascii_text.strip()
    except (UnicodeDecodeError, binascii.Error, ValueError):
        der = contents
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise UsageProblemError(f"{field} ({option}): {path!r} is not a certificate{expected}") from None
    return text_form if text_form is not None else base64.b64encode(der).decode("ascii")


# --- commands --------------------------------------------------------------------------------


def check_certificate_input(contents: bytes, password: str | None, path: str) -> None:
    """Run the worker's certificate-input checks (:func:`producer.certinput.parse_certificate_input`)
    on a file the CLI holds with its password, so a bad file or a wrong PKCS#12 password is
    refused before anything is enqueued (the host's Windows build is unknown here: the
    build-dependent check stays the worker's).

    Raises:
        UsageProblemError: naming the field, the result code the worker would give, and the fix.
    """
    try:
        parse_certificate_input(contents, password)
    except CertificateInputError as exc:
        field = "certificate.password" if exc.code is ResultCode.PFX_PASSWORD_INCORRECT else "certificate"
        raise UsageProblemError(
            f"{field} (--certificate {path}): {exc.code.value}: {exc.message}; nothing was enqueued"
        ) from None
