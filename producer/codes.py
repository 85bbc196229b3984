"""Stable, machine-readable result codes.

Every :class:`producer.messages.JobResult` carries exactly one of these codes. The values are
part of the public contract: never rename one, only add. ``docs/result-codes.md`` documents each
code with what the user should check; a unit test keeps that page and this enum in step.
"""

from __future__ import annotations

from enum import StrEnum


class ResultCode(StrEnum):
    """Stable result codes (lower-case snake case strings on the wire)."""

    # --- success ---------------------------------------------------------------------------
    OK = "ok"
    """The job did what it was asked to do."""
    ALREADY_PRESENT = "already_present"
    """Add of a certificate that is already in the store with the same thumbprint (idempotent)."""
    ALREADY_ABSENT = "already_absent"
    """Remove of a certificate that is not in the store (idempotent)."""

    # --- warning ---------------------------------------------------------------------------
    PARTIAL = "partial"
    """The job finished but skipped some items; the result's ``warnings`` say which and why."""
    SERVICE_RESTART_FAILED = "service_restart_failed"
    """WinSQL: the certificate is bound but restarting the SQL Server service failed."""

    # --- failure: certificate input (checked on the worker before any remote call) ---------
    CERTIFICATE_UNAVAILABLE = "certificate_unavailable"
    """The job's certificate (or its password) cannot be decrypted with WINCERT_SECRET_KEYS,
    or travels in plaintext while WINCERT_ALLOW_PLAINTEXT_SECRETS is false."""
    INVALID_CERTIFICATE_DATA = "invalid_certificate_data"
    """The certificate contents are not a PKCS#12, DER, PEM or PKCS#7 file (or are damaged)."""
    UNSUPPORTED_CERTIFICATE_FORMAT = "unsupported_certificate_format"
    """Recognised but unusable input: a lone key, CSR or CRL, public-key PKCS#12 modes."""
    PFX_PASSWORD_INCORRECT = "pfx_password_incorrect"  # noqa: S105 - a code, not a password
    """The PKCS#12 password is wrong (or given where the file has none, or missing)."""
    PFX_MULTIPLE_KEYS = "pfx_multiple_keys"
    """The PKCS#12 holds more than one distinct private key."""
    PFX_KEY_WITHOUT_CERTIFICATE = "pfx_key_without_certificate"
    """The private key matches no certificate in the file."""
    AMBIGUOUS_LEAF = "ambiguous_leaf"
    """No private key and not exactly one end-entity certificate to add."""
    PFX_ITERATIONS_EXCEED_WINDOWS_LIMIT = "pfx_iterations_exceed_windows_limit"
    """A key-derivation iteration count is above Windows' limit (600,000)."""
    PFX_ALGORITHM_UNSUPPORTED_BY_HOST = "pfx_algorithm_unsupported_by_host"
    """PBES2/AES PKCS#12 for a host older than Windows Server 2019 (build 17763)."""

    # --- failure: the host refused the change ----------------------------------------------
    PROVIDER_NOT_FOUND = "provider_not_found"
    """The ProviderName (CSP/KSP) is not installed on the host (or cannot hold that key type)."""
    PFX_IMPORT_FAILED = "pfx_import_failed"
    """The host could not import the file (it reports wrong password and unsupported algorithms alike)."""
    IMPORT_VERIFICATION_FAILED = "import_verification_failed"
    """After the import the certificate (or its usable private key) was not in the store; rolled back."""
    IIS_NOT_INSTALLED = "iis_not_installed"
    """IISU job for a host without IIS."""
    SITE_NOT_FOUND = "site_not_found"
    """The IIS site named by SiteName does not exist."""
    INVALID_SSL_FLAGS = "invalid_ssl_flags"
    """SniFlag asks for CCS (bit 2: never with a thumbprint) or features this Windows build lacks."""
    INVALID_HOST_NAME = "invalid_host_name"
    """The host refused HostName: not a valid IDN in A-label form (IDNA 2008 / UTS 46)."""
    WILDCARD_HOST_NOT_SUPPORTED = "wildcard_host_not_supported"
    """A wildcard host name on IIS older than 10."""
    BINDING_CONFLICT = "binding_conflict"
    """Another site already owns the ip:port (or host:port with SNI); set allow_takeover to take it."""
    SSL_MAPPING_SHADOWED = "ssl_mapping_shadowed"
    """IISU: the binding's http.sys mapping would shadow, or be shadowed by, another http.sys
    mapping (an IP-specific IP:port mapping wins over SNI and central-store mappings on its port
    for clients on that IP); set allow_takeover to bind deliberately."""
    CERTIFICATE_NOT_FOUND = "certificate_not_found"
    """The certificate to bind is not in the store (or has no private key)."""
    SQL_INSTANCE_NOT_FOUND = "sql_instance_not_found"
    """An InstanceName is not an installed SQL Server instance."""
    SQL_ECC_NOT_SUPPORTED = "sql_ecc_not_supported"
    """WinSQL: an ECDSA certificate for an instance whose version cannot use one (SQL Server
    before 2022); refused before anything changed."""
    PRIVATE_KEY_NOT_FOUND = "private_key_not_found"
    """The certificate has no private key file the SQL Server service could read."""
    KEY_ACL_FAILED = "key_acl_failed"
    """Granting the SQL Server service account read access to the private key failed."""
    STORE_OPEN_FAILED = "store_open_failed"
    """The certificate store exists but could not be opened (access denied, or another error
    than "not found"); nothing was changed."""
    USAGE_CHECK_FAILED = "usage_check_failed"
    """A remove that keeps certificates in use could not read the IIS or SQL Server
    configuration to tell; nothing was removed."""
    IIS_COMMIT_FAILED = "iis_commit_failed"
    """IIS could not save the binding change (ServerManager.CommitChanges failed); the binding
    is as it was."""

    # --- failure: reenrollment -------------------------------------------------------------
    KEY_GENERATION_FAILED = "key_generation_failed"
    """The host could not create the key pair or the certificate request (certreq failed)."""
    NO_MATCHING_REQUEST = "no_matching_request"
    """The signed certificate's public key matches no pending request in the host's REQUEST store."""
    SIGNING_FAILED = "signing_failed"
    """The chained signer task failed, returned no usable certificate, or no certificate arrived
    within ``WINCERT_SIGNING_DEADLINE_SECONDS``."""
    SIGNER_NOT_ALLOWED = "signer_not_allowed"
    """The job's ``signer.task`` is not in the worker's allow-list (``WINCERT_SIGNER_TASKS``);
    refused before any connection."""

    # --- failure: the job itself -----------------------------------------------------------
    INVALID_JOB = "invalid_job"
    """The job failed schema validation on the worker (a producer bypassed validation)."""
    JOB_TOO_OLD = "job_too_old"
    """The job's ``submitted_at`` is older than ``WINCERT_JOB_MAX_AGE_SECONDS``: a replayed
    message, or one stuck in a queue for that long; nothing was done."""
    SUBMITTED_IN_FUTURE = "submitted_in_future"
    """The job's ``submitted_at`` lies more than ``WINCERT_JOB_MAX_CLOCK_SKEW_SECONDS`` in the
    worker's future: a producer with a wrong clock, or a timestamp set to dodge the age check;
    nothing was done."""
    UNAUTHENTICATED = "unauthenticated"
    """The queue message carries no valid job MAC (``wincert_auth``): not sent by a producer
    holding ``WINCERT_SECRET_KEYS``, or changed after signing. Dead-lettered, never run."""
    STORE_NOT_FOUND = "store_not_found"
    """The certificate store named by the store path does not exist on the host."""
    CREDENTIAL_OUT_OF_SCOPE = "credential_out_of_scope"
    """The job pairs a named credential with a host outside the credential's ``hosts`` scope;
    refused before any connection, nothing was sent."""
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    """The named credential is not configured on the worker, or an inline secret cannot be
    decrypted with the worker's ``WINCERT_SECRET_KEYS``."""

    # --- failure: connection ---------------------------------------------------------------
    AUTH_FAILED = "auth_failed"
    """The host refused the credentials (HTTP 401 after the authentication exchange)."""
    HOST_UNREACHABLE = "host_unreachable"
    """No TCP connection to the WinRM listener (refused, no route, DNS failure, connect timeout)."""
    TLS_ERROR = "tls_error"
    """The HTTPS handshake failed, typically certificate validation of the WinRM listener."""
    PROTOCOL_MISMATCH = "protocol_mismatch"
    """The job's protocol does not match the listener: plain HTTP sent to an HTTPS listener, or
    TLS to a plain HTTP listener. Not retried."""
    TIMEOUT = "timeout"
    """The host accepted the connection but did not answer in time."""
    WINRM_FAULT = "winrm_fault"
    """The WinRM service answered with a WS-Management fault (quota, bad endpoint, ...)."""

    # --- failure: SSH (protocol ssh) -----------------------------------------------------
    SSH_HOST_KEY_UNKNOWN = "ssh_host_key_unknown"
    """The SSH host key of the host is not in the worker's known_hosts (and first-use pinning is off)."""
    SSH_HOST_KEY_CHANGED = "ssh_host_key_changed"
    """The host presented a different SSH host key than known_hosts pins: refused (possible MITM)."""
    SSH_SUBSYSTEM_UNAVAILABLE = "ssh_subsystem_unavailable"
    """sshd accepted the key but has no PowerShell subsystem (sshd_config ``Subsystem powershell``)."""

    # --- failure: Kerberos (the message names the SPN and what to fix) -------------------
    KERBEROS_IP_TARGET = "kerberos_ip_target"
    """auth kerberos with client_machine given as an IP address and no spn_hostname: an SPN
    names a host, so Windows would not find one either."""
    KERBEROS_SPN_NOT_FOUND = "kerberos_spn_not_found"
    """The KDC knows no service principal for the SPN (``setspn``/``spn_service``/``spn_hostname``)."""
    KERBEROS_PRINCIPAL_NOT_FOUND = "kerberos_principal_not_found"
    """The KDC knows no such user principal (the credential's user name or keytab principal)."""
    KERBEROS_REALM_UNREACHABLE = "kerberos_realm_unreachable"
    """No KDC found or reachable for the credential's realm (wrong realm, krb5.conf, DNS, firewall)."""
    KERBEROS_CLOCK_SKEW = "kerberos_clock_skew"
    """The worker's clock differs from the KDC's (or the host's) by more than the allowed skew."""
    KERBEROS_CREDENTIAL_UNAVAILABLE = "kerberos_credential_unavailable"
    """The keytab or credential cache cannot be used: missing, no key for the principal, expired."""
    KERBEROS_ERROR = "kerberos_error"
    """Another Kerberos failure; the message carries the Kerberos library's text and the SPN."""

    # --- failure: remote execution ---------------------------------------------------------
    REMOTE_ERROR = "remote_error"
    """A PowerShell function on the host failed with an error this project does not classify."""

    # --- failure: orchestration ------------------------------------------------------------
    SLOT_DEADLINE_EXCEEDED = "slot_deadline_exceeded"
    """The job waited longer than ``WINCERT_SLOT_WAIT_DEADLINE`` for a per-host slot."""
    INTERNAL_ERROR = "internal_error"
    """A defect in the worker; the message and the worker log (by job id) say more."""


SUCCESS_CODES = frozenset({ResultCode.OK, ResultCode.ALREADY_PRESENT, ResultCode.ALREADY_ABSENT})
WARNING_CODES = frozenset({ResultCode.PARTIAL, ResultCode.SERVICE_RESTART_FAILED})
