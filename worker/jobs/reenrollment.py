"""Reenrollment with on-device key generation, for every store type.

* Phase 1, ``reenrollment`` (:func:`generate`): ``Get-WinCertHostInfo`` → the provider must be
  installed (``provider_not_found``) → ``New-WinCertCertificateRequest`` with
  ``RequestId = str(job_id)`` and the canonical subject (:func:`producer.subject.canonical_subject`).
  The host keeps the pending key in ``REQUEST`` tagged with the job id, so a redelivered job
  gets the same CSR back and no second key is made. The worker then checks the CSR with
  ``cryptography``: its signature verifies with its own key, its subject and SANs are exactly
  what the job asked for, its key is the asked algorithm and size; otherwise the job fails
  (``key_generation_failed``). The result carries ``csr`` (PEM). With ``signer`` the message
  names the completion job (:func:`completion_job_id`) that :mod:`worker.signing` chains.
* Phase 2, ``reenrollment_complete`` (:func:`complete`): the certificate (and chain) is parsed
  here; host checks of the store type run first (IISU: IIS, SSL flags; WinSQL: instance names),
  then ``Install-WinCertSignedCertificate`` pairs it with its pending key (``no_matching_request``
  when none has its public key) and the result must show ``HasPrivateKey``. Then the store
  type's binding (:func:`worker.jobs.iisu.bind`, :func:`worker.jobs.winsql.bind`); a failed
  binding fails the job with the binding's code and says that the certificate stays installed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier

from producer.codes import ResultCode
from producer.entry_parameters import IisParameters, SqlParameters
from producer.messages import ReenrollmentCompleteJob, ReenrollmentJob, Status, StoreType, completion_job_id
from producer.subject import canonical_subject, parse_subject
from worker.jobs import certificates, iisu, winsql
from worker.jobs.outcome import JobStepError, Outcome
from worker.remote.errors import RemoteCommandError
from worker.remote.session import RemoteSession

DEFAULT_PROVIDER = "Microsoft Software Key Storage Provider"
"""The provider keys are generated in when the job names none (the peer defaults to the legacy
CryptoAPI 'Microsoft Strong Cryptographic Provider', which cannot hold ECDSA keys)."""

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

_SAN_PARAMETERS = {"dns": "DnsName", "ip": "IpAddress", "email": "Email", "upn": "Upn", "uri": "Uri"}
# Attribute OID -> the short name producer.subject writes (CertStrToName's names).
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.7": "L",
    "2.5.4.8": "S",
    "2.5.4.6": "C",
    "1.2.840.113549.1.9.1": "E",
    "0.9.2342.19200300.100.1.25": "DC",
    "2.5.4.9": "STREET",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.42": "G",
    "2.5.4.4": "SN",
    "2.5.4.12": "T",
    "2.5.4.17": "PostalCode",
    "2.5.4.13": "Description",
}


# -- phase 1 ---------------------------------------------------------------------------------


def _provider(job: ReenrollmentJob) -> str:
    entry_provider = getattr(job.entry, "provider_name", None)
    return job.provider_name or entry_provider or DEFAULT_PROVIDER


def _general_names(extensions: x509.Extensions) -> list[tuple[str, str]]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found: list[tuple[str, str]] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            found.append(("dns", name.value))
        elif isinstance(name, x509.IPAddress):
            found.append(("ip", str(name.value)))
        elif isinstance(name, x509.RFC822Name):
            found.append(("email", name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            found.append(("uri", name.value))
        elif isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            found.append(("upn", _utf8_string(name.value)))
        else:
            found.append((type(name).__name__, repr(name)))
    return found


def _utf8_string(der: bytes) -> str:
    """The text of a DER UTF8String (tag 0x0C); other encodings as hex."""
    if len(der) >= 2 and der[0] == 0x0C:
        length, offset = der[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
        return der[offset : offset + length].decode("utf-8", errors="replace")
    return der.hex()


def _normalized_sans(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for kind, value in pairs:
        if kind == "ip":
            with contextlib.suppress(ValueError):
                value = str(ipaddress.ip_address(value.strip("[]")))
        out.append((kind, value))
    return sorted(out)


def check_csr(job: ReenrollmentJob, csr_pem: str) -> x509.CertificateSigningRequest:
    """The CSR the host returned, checked against the job.

    Raises:
        JobStepError: ``key_generation_failed`` naming what does not match.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise JobStepError(
            ResultCode.KEY_GENERATION_FAILED, f"the host returned an unreadable certificate request ({exc})"
        ) from None
    problems: list[str] = []
    if not csr.is_signature_valid:
        problems.append("its signature does not verify with its own public key")
    wanted_subject = parse_subject(job.subject)
    got_subject = [
        (_SHORT_NAMES.get(a.oid.dotted_string, f"OID.{a.oid.dotted_string}"), str(a.value))
        for rdn in reversed(csr.subject.rdns)
        for a in rdn
    ]
    if got_subject != wanted_subject:
        problems.append(f"its subject is {got_subject!r}, not {wanted_subject!r}")
    wanted_sans = _normalized_sans([(s.type, s.value) for s in job.sans])
    got_sans = _normalized_sans(_general_names(csr.extensions))
    if got_sans != wanted_sans:
        problems.append(f"its subject alternative names are {got_sans!r}, not {wanted_sans!r}")
    key = csr.public_key()
    if job.key_algorithm == "RSA":
        size = job.key_length or 2048
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size != size:
            problems.append(f"its key is not RSA {size}")
    else:
        curve = "secp256r1" if job.key_algorithm == "ECDSA_P256" else "secp384r1"
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
            problems.append(f"its key is not {job.key_algorithm}")
    if problems:
        raise JobStepError(
            ResultCode.KEY_GENERATION_FAILED,
            f"the certificate request the host returned for job {job.job_id} does not match the job: "
            + "; ".join(problems),
        )
    return csr


def generate(job: ReenrollmentJob, session: RemoteSession) -> Outcome:
    """Phase 1: create (or get again) the pending key and its CSR; the result carries ``csr``."""
    info = certificates.host_info(session)
    provider = _provider(job)
    certificates.check_provider(info, provider)
    if job.store.store_type is StoreType.WIN_SQL and job.key_algorithm != "RSA":
        # an ECDSA key SQL Server cannot use is refused before any key exists (winsql.ecc_problem)
        entry = job.entry_parameters if isinstance(job.entry_parameters, SqlParameters) else SqlParameters()
        installed_sql, sql_names = winsql.resolve_instances(session, entry)
        winsql.check_ecc(installed_sql, sql_names, "EC")
    params: dict[str, Any] = {
        "RequestId": str(job.job_id),
        "Subject": canonical_subject(job.subject),
        "KeyAlgorithm": job.key_algorithm,
        "ProviderName": provider,
    }
    if job.key_algorithm == "RSA":
        params["KeyLength"] = job.key_length or 2048
    for kind, parameter in _SAN_PARAMETERS.items():
        values = [s.value for s in job.sans if s.type == kind]
        if values:
            params[parameter] = values
    # WinCert.KeyGenerationFailed -> key_generation_failed (worker.remote.errors.ERROR_ID_CODES)
    invocation = session.invoke("New-WinCertCertificateRequest", params)
    record = invocation.record()
    csr_pem = str(record["Csr"])
    check_csr(job, csr_pem)
    existing = record.get("Outcome") == "existing"
    message = (
        f"{'Returned the existing' if existing else 'Created a'} {job.key_algorithm} key"
        f" in '{provider}' on {info.computer_name or job.store.host}, pending in LocalMachine\\REQUEST"
        f" (request {job.job_id}); the certificate request is in 'csr'."
    )
    if job.signer is not None:
        message += (
            f" Chained signing: {job.signer.task} signs it; completion job {completion_job_id(job.job_id)}."
        )
    else:
        message += (
            " Submit a reenrollment_complete job with the signed certificate to install it"
            f" (request_job_id {job.job_id})."
        )
    return Outcome(Status.SUCCESS, ResultCode.OK, message, list(invocation.warnings), csr=csr_pem)


# -- phase 2 ---------------------------------------------------------------------------------


def load_certificates(text: str, what: str) -> list[x509.Certificate]:
    """Certificates from PEM text (one or more) or base64 DER.

    Raises:
        JobStepError: ``invalid_certificate_data``.
    """
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificates(text.encode("ascii"))
        return [x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))]
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise JobStepError(
            ResultCode.INVALID_CERTIFICATE_DATA,
            f"the job's {what} is not a PEM or base64 DER certificate ({exc})",
        ) from None


def _thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()  # noqa: S324 - Windows thumbprint


def complete(job: ReenrollmentCompleteJob, session: RemoteSession) -> Outcome:
    """Phase 2: install the signed certificate with its pending key, then bind it."""
    leaf, *extra = load_certificates(job.certificate, "certificate")
    chain = extra + [c for text in job.chain for c in load_certificates(text, "chain certificate")]
    thumbprint = _thumbprint(leaf)
    store_path = job.store.store_path
    store_type = job.store.store_type
    entry = job.entry
    warnings: list[str] = []

    info = certificates.host_info(session)
    installed_sql: dict[str, dict[str, Any]] = {}
    sql_names: list[str] = []
    if store_type is StoreType.IISU:
        assert isinstance(entry, IisParameters)
        iisu.check_host(entry, info)
    elif store_type is StoreType.WIN_SQL:
        assert isinstance(entry, SqlParameters)
        installed_sql, sql_names = winsql.resolve_instances(session, entry)
        if isinstance(leaf.public_key(), ec.EllipticCurvePublicKey):
            winsql.check_ecc(installed_sql, sql_names, "EC")

    params: dict[str, Any] = {"StorePath": store_path, "CertificateData": leaf.public_bytes(Encoding.DER)}
    if job.include_chain and chain:
        params["ChainData"] = [c.public_bytes(Encoding.DER) for c in chain]
    # WinCert.NoMatchingRequest -> no_matching_request (worker.remote.errors.ERROR_ID_CODES)
    invocation = session.invoke("Install-WinCertSignedCertificate", params)
    record = invocation.record()
    warnings.extend(invocation.warnings)
    found = str(record.get("Thumbprint") or "").upper()
    if found != thumbprint or not record.get("HasPrivateKey"):
        raise JobStepError(
            ResultCode.IMPORT_VERIFICATION_FAILED,
            f"the host reported {found or 'no certificate'} (HasPrivateKey {record.get('HasPrivateKey')})"
            f" after installing {thumbprint}",
        )
    request_id = record.get("RequestId")
    if job.request_job_id is not None and request_id and str(request_id) != str(job.request_job_id):
        warnings.append(
            f"the certificate paired with the pending key of request {request_id}, not of job"
            f" {job.request_job_id}"
        )
    if job.include_chain and chain:
        warnings.extend(
            f"chain certificate {_thumbprint(c)} ({c.subject.rfc4514_string()}) is in"
            f" {'Root' if c.issuer == c.subject else 'CA'}"
            for c in chain
        )
    installed = str(record["Outcome"])
    what = f"Certificate {thumbprint} ({leaf.subject.rfc4514_string()}) " + (
        f"was already in {store_path} with its private key"
        if installed == "already_present"
        else f"was installed in {store_path} with its pending private key"
        + (f" (request {request_id})" if request_id else "")
    )
    kept = f"the certificate {thumbprint} stays installed in {store_path} with its private key"

    if store_type is StoreType.IISU:
        assert isinstance(entry, IisParameters)
        try:
            bound = iisu.bind(session, entry, store_path, thumbprint, allow_takeover=job.allow_takeover)
        except RemoteCommandError as exc:
            exc.message += f" ({kept}; bind it again once the cause is fixed)"
            raise
        warnings.extend(bound.warnings)
        previous = f"; it replaced {bound.previous_thumbprint}" if bound.previous_thumbprint else ""
        return Outcome(
            Status.SUCCESS,
            ResultCode.OK,
            f"{what}; bound to {entry.site_name} https {bound.binding_information}"
            f" ({bound.outcome}{previous}).",
            warnings,
            thumbprint=thumbprint,
        )
    if store_type is StoreType.WIN_SQL:
        try:
            result = winsql.bind(
                session,
                installed_sql,
                sql_names,
                thumbprint,
                restart_service=job.store.restart_service,
                certificate_changed=installed != "already_present",
            )
        except RemoteCommandError as exc:
            exc.message += f" ({kept})"
            raise
        warnings.extend(result.warnings)
        if result.restart_failed:
            return Outcome(
                Status.WARNING,
                ResultCode.SERVICE_RESTART_FAILED,
                f"{what}; bound to {', '.join(result.bound)}, but restarting"
                f" {', '.join(result.restart_failed)} failed; restart the service for SQL Server to use"
                " the new certificate.",
                warnings,
                thumbprint=thumbprint,
                key_access=result.key_access,
            )
        return Outcome(
            Status.SUCCESS,
            ResultCode.OK,
            f"{what}; bound to SQL Server instance(s) {', '.join(result.bound)}.",
            warnings,
            thumbprint=thumbprint,
            key_access=result.key_access,
        )
    code = ResultCode.ALREADY_PRESENT if installed == "already_present" else ResultCode.OK
    return Outcome(Status.SUCCESS, code, f"{what}.", warnings, thumbprint=thumbprint)
