"""Keyfactor configuration -> our job: :func:`parse_keyfactor` (the job, notes, JobHistoryId)
and :func:`from_keyfactor` (the job alone); model errors are mapped back to Keyfactor field
paths."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from producer.keyfactor.fields import (
    PROPS,
    KeyfactorConfigError,
    Keys,
    bool_value,
    config_error,
    json_object,
    port_value,
    text_value,
)
from producer.keyfactor.job_fields import (
    read_alias,
    read_entry_parameters,
    read_job_history_id,
    read_job_id,
    read_key_algorithm,
    read_sans,
)
from producer.keyfactor.sealing import read_certificate, read_credential
from producer.keyfactor.store_fields import (
    read_capability,
    read_client_machine,
    read_operation,
    read_protocol,
)
from producer.messages import AnyJob, StoreType, parse_job

if TYPE_CHECKING:
    from producer.client import Client


@dataclass(frozen=True)
class KeyfactorJob:
    """A converted Keyfactor job configuration.

    Attributes:
        job: The validated job (secrets sealed).
        notes: What the conversion changed or ignored that the user should know (deprecated
            store types, legacy names, a JobId that is not a UUID, ...), one sentence each.
        job_history_id: ``JobHistoryId`` of the configuration (for :func:`to_keyfactor_result`).
        capability: ``Capability`` as given.
    """

    job: AnyJob
    notes: list[str] = field(default_factory=list)
    job_history_id: int | None = None
    capability: str = ""


def _tagless(loc: Sequence[int | str]) -> str:
    """A pydantic error location without the union tags (``AddJob``, the credential's kind), dotted."""
    parts = [str(p) for i, p in enumerate(loc) if not (i == 0 or (i > 0 and loc[i - 1] == "credential"))]
    return ".".join(parts)


def _map_validation(exc: ValidationError, paths: dict[str, str]) -> KeyfactorConfigError:
    """The model's errors as Keyfactor field paths (``paths``: our field -> Keyfactor path)."""
    problems = []
    for error in exc.errors(include_url=False):
        ours = _tagless(error["loc"])
        path = None
        probe = ours
        while probe:
            if probe in paths:
                path = paths[probe]
                break
            probe = probe.rpartition(".")[0]
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if path is None and not ours:
            # Whole-job checks name the field first: "alias: ...", "key_length 1024 is not ...".
            word = message.split(" ", 1)[0].rstrip(":")
            if word in paths:
                path = paths[word]
                message = message.removeprefix(f"{word}: ")
        if path is None:
            path = {"store": "CertificateStoreDetails", "entry_parameters": "JobProperties"}.get(
                ours, "JobProperties" if ours.startswith("entry_parameters") else ours or "job"
            )
        problems.append((path, message))
    return KeyfactorConfigError(problems)


def parse_keyfactor(config: Mapping[str, Any] | str | bytes, client: Client | None = None) -> KeyfactorJob:
    """Convert a Keyfactor orchestrator job configuration; return the job and the notes.

    Args:
        config: The configuration as a JSON object or JSON text.
        client: Seals the server password and the certificate with its ``WINCERT_SECRET_KEYS``;
            ``None``: a temporary client configured from the environment (only when the job
            carries a secret).

    Raises:
        KeyfactorConfigError: naming the Keyfactor field and the fix (also when a secret would
            travel in plaintext without ``WINCERT_ALLOW_PLAINTEXT_SECRETS``).

    Warns:
        DeprecationWarning: the legacy IISBin store type (converted to IISU).
    """
    if isinstance(config, str | bytes):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise config_error(
                "job configuration", f"is not valid JSON ({exc.msg} at character {exc.pos})"
            ) from None
    if not isinstance(config, Mapping):
        raise config_error("job configuration", "must be a JSON object")
    notes: list[str] = []
    top = Keys(config, "")
    store_type, kind, legacy = read_capability(top)
    capability = str(top.value("Capability"))
    if legacy:
        message = (
            f"Capability {capability!r}: the IISBin store type (Keyfactor 1.x) is deprecated; the job"
            " runs as IISU. Convert the store to IISU (Keyfactor's IIS-Conversion.sql renames"
            " 'Site Name'/'Host Name')"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=3)
        notes.append(message)

    details_found = top.get("CertificateStoreDetails")
    details = Keys(
        json_object(details_found[1] if details_found else None, "CertificateStoreDetails", required=True),
        "CertificateStoreDetails",
    )
    props_found = details.get("Properties")
    props = Keys(json_object(props_found[1] if props_found else None, PROPS), PROPS, bracket=True)
    job_props = Keys(json_object(top.value("JobProperties"), "JobProperties"), "JobProperties", bracket=True)

    paths: dict[str, str] = {
        "store.store_type": "Capability",
        "store.client_machine": details.path_of("ClientMachine"),
        "store.store_path": details.path_of("StorePath"),
        "store.protocol": props.path_of("WinRM Protocol"),
        "store.port": props.path_of("WinRM Port"),
        "store.spn_with_port": props.path_of("spnwithport"),
        "store.jea_endpoint": props.path_of("JEAEndpointName"),
        "store.restart_service": props.path_of("RestartService"),
        "job_id": "JobId",
        "overwrite": "Overwrite",
        "renewal_thumbprint": job_props.path_of("RenewalThumbprint"),
        "subject": job_props.path_of("subjectText"),
        "provider_name": job_props.path_of("ProviderName"),
    }
    store: dict[str, Any] = {
        "store_type": store_type.value,
        "client_machine": read_client_machine(details, notes),
        "store_path": text_value(details.value("StorePath"), paths["store.store_path"]),
        "protocol": read_protocol(props, notes).value,
        "port": port_value(props.value("WinRM Port"), paths["store.port"]),
        "spn_with_port": bool_value(props.value("spnwithport"), paths["store.spn_with_port"], False),
    }
    if store["protocol"] == "ssh" and store["port"] in (5985, 5986):
        # the Keyfactor orchestrator ignores the port for ssh (always 22): a WinRM port here is
        # the store type's default, not an sshd port
        notes.append(f"{paths['store.port']} is {store['port']}, a WinRM port; using 22 for ssh")
        store["port"] = None
    jea = text_value(props.value("JEAEndpointName"), paths["store.jea_endpoint"])
    if jea and jea.strip():
        store["jea_endpoint"] = jea.strip()
    restart = bool_value(props.value("RestartService"), paths["store.restart_service"], False)
    if store_type is StoreType.WIN_SQL:
        store["restart_service"] = restart
    elif restart:
        notes.append(f"{paths['store.restart_service']} applies to WinSql stores only; ignored")

    job: dict[str, Any] = {}
    job_id = read_job_id(top, notes)
    if job_id is not None:
        job["job_id"] = job_id

    if kind == "inventory":
        job["job_type"] = "inventory"
    elif kind == "management":
        operation = read_operation(top)
        if operation == "add":
            job["job_type"] = "add"
            job["overwrite"] = bool_value(top.value("Overwrite"), "Overwrite", False)
            entry = read_entry_parameters(store_type, job_props, paths, notes)
            if entry is not None:
                job["entry_parameters"] = entry
            renewal = text_value(job_props.value("RenewalThumbprint"), paths["renewal_thumbprint"])
            if renewal and renewal.strip():
                job["renewal_thumbprint"] = renewal
            alias = read_alias(top, paths)
            if alias is not None and store_type is StoreType.IISU:
                job["alias"] = alias  # the old binding's alias during a renewal
        else:
            job["job_type"] = "remove"
            alias = read_alias(top, paths)
            if alias is None:
                raise config_error(
                    paths.get("alias", "JobCertificate.Alias"),
                    "missing; give the alias from inventory (WinCert/WinSql the thumbprint, IISU"
                    " THUMBPRINT:SiteName:IP:Port:HostName)",
                )
            job["alias"] = alias
            if store_type is StoreType.WIN_SQL:  # IISU: the alias alone names the binding (peer)
                entry = read_entry_parameters(
                    store_type, job_props, paths, notes, exclude=frozenset({"ProviderName"})
                )
                if entry is not None:
                    job["entry_parameters"] = entry
    else:
        job["job_type"] = "reenrollment"
        subject = text_value(job_props.value("subjectText"), paths["subject"])
        if subject is None or not subject.strip():
            raise config_error(paths["subject"], "missing; give the X.500 subject, e.g. CN=web01.contoso.com")
        job["subject"] = subject
        algorithm, length = read_key_algorithm(job_props, paths)
        job["key_algorithm"] = algorithm
        if length is not None:
            job["key_length"] = length
        provider = text_value(job_props.value("ProviderName"), paths["provider_name"])
        if provider and provider.strip():
            job["provider_name"] = provider.strip()
        job["sans"] = read_sans(top, job_props, paths)
        if store_type is not StoreType.WIN_CERT:
            entry = read_entry_parameters(
                store_type, job_props, paths, notes, exclude=frozenset({"ProviderName"})
            )
            if entry is not None:
                job["entry_parameters"] = entry

    # Secrets last, after everything else was checked, so a bad field is reported without
    # encrypting anything first.
    store["credential"] = None
    _check(job, store, paths)
    store["credential"] = read_credential(top, props, client, paths)
    if job["job_type"] == "add":
        job["certificate"] = read_certificate(top, client, paths)
    try:
        parsed = parse_job({**job, "store": store})
    except ValidationError as exc:
        raise _map_validation(exc, paths) from None
    return KeyfactorJob(parsed, notes, read_job_history_id(top), capability)


def _check(job: dict[str, Any], store: dict[str, Any], paths: dict[str, str]) -> None:
    """Validate the job with a placeholder certificate (no secret sealed yet)."""
    draft = {**job, "store": store}
    if job["job_type"] == "add":
        draft["certificate"] = {"contents_plaintext": "-"}
    try:
        parse_job(draft)
    except ValidationError as exc:
        raise _map_validation(exc, paths) from None


def from_keyfactor(config: Mapping[str, Any] | str | bytes, client: Client | None = None) -> AnyJob:
    """The job for a Keyfactor orchestrator job configuration (see :func:`parse_keyfactor`,
    which also returns the conversion notes and the ``JobHistoryId``).

    Raises:
        KeyfactorConfigError: naming the Keyfactor field and the fix.

    Warns:
        DeprecationWarning: the legacy IISBin store type (converted to IISU).
    """
    return parse_keyfactor(config, client).job
