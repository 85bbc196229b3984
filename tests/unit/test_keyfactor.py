"""``producer.keyfactor``: Keyfactor orchestrator job configurations in, Keyfactor shapes out.

The configurations under ``tests/fixtures/keyfactor/`` are written from the peer's documented
shapes (Keyfactor/iis-orchestrator ``WinCertTestConsole/*.json``, ``ConfigurationFactory.cs``,
the IISBin 1.x README): ``Properties`` as a JSON string or an object, ``WinRm``/``WinRM``
spellings, legacy entry-parameter names and SniFlag labels, empty credentials meaning the
orchestrator's own identity.
"""

from __future__ import annotations

import copy
import json
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producer import (
    AddJob,
    CertificateItem,
    Client,
    InventoryJob,
    JobResult,
    KeyfactorConfigError,
    ProducerSettings,
    RemoveJob,
    from_keyfactor,
    keyfactor_output,
    parse_keyfactor,
    to_keyfactor_inventory,
    to_keyfactor_result,
)
from producer.messages import ReenrollmentJob
from producer.secrets import decrypt_secret, generate_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keyfactor"
KEY = generate_key()
THUMB = "DE09CEFD8AC81B4F6B6B71011A65A0B9987A3832"
OLD = "3B8D5F0C2E1A4B6C8D9E0F1A2B3C4D5E6F708192"
SECRETS = ("Winrm-S3cret!", "Sql-S3cret!", "Pfx-Pa55!")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def contents(name: str) -> str:
    value: str = load(name)["JobCertificate"]["Contents"]
    return value


def make_client(*, keys: bool = True, plaintext: bool = False) -> Client:
    settings = ProducerSettings(
        broker_url="redis://127.0.0.1:1/0",
        secret_keys=KEY if keys else None,
        allow_plaintext_secrets=plaintext,
    )
    return Client(settings)


@pytest.fixture
def client() -> Any:
    with make_client() as c:
        yield c


def store(**changes: Any) -> dict[str, Any]:
    base = {
        "store_type": "WinCert",
        "client_machine": "web01.contoso.com",
        "store_path": "My",
        "protocol": "https",
        "port": 5986,
        "auth": "negotiate",
        "credential": None,
        "cert_validation": True,
        "spn_with_port": False,
        "jea_endpoint": None,
        "restart_service": False,
    }
    base.update(changes)
    return base


def wire(job: Any) -> dict[str, Any]:
    data: dict[str, Any] = job.model_dump(mode="json")
    return data


def assert_no_plaintext(job: Any, *extra: str) -> None:
    text = job.model_dump_json()
    for secret in (*SECRETS, *extra):
        assert secret not in text


# --- conversions -------------------------------------------------------------------------------


def test_wincert_inventory(client: Client) -> None:
    converted = parse_keyfactor(load("wincert-inventory.json"), client)
    assert isinstance(converted.job, InventoryJob)
    assert wire(converted.job) == {
        "job_id": "6c0b9d1e-3f2a-4b5c-8d7e-9f0a1b2c3d4e",
        "schema_version": 1,
        "submitted_at": None,
        "store": store(),
        "job_type": "inventory",
    }
    assert converted.notes == []
    assert converted.job_history_id == 1001
    assert converted.capability == "CertStores.WinCert.Inventory"


def test_ssh_store_becomes_protocol_ssh_on_port_22_with_host_key_checking_noted(client: Client) -> None:
    config = _props(load("wincert-inventory.json"), **{"WinRM Protocol": "ssh", "WinRM Port": "5986"})
    converted = parse_keyfactor(config, client)
    store = wire(converted.job)["store"]
    assert (store["protocol"], store["port"], store["auth"]) == ("ssh", None, "publickey")
    assert converted.job.store.effective_port == 22
    assert any("WINCERT_SSH_KNOWN_HOSTS" in note for note in converted.notes)
    assert any("using 22 for ssh" in note for note in converted.notes)
    custom = parse_keyfactor(_props(load("wincert-inventory.json"), **{"WinRM Protocol": "ssh",
                                                                       "WinRM Port": "2222"}), client)
    assert custom.job.store.effective_port == 2222  # the peer ignores it; we honour it


def test_iisu_add_properties_json_string_with_winrm_camel_case(client: Client) -> None:
    job = from_keyfactor(load("iisu-add-winrm-camel.json"), client)
    assert isinstance(job, AddJob)
    data = wire(job)
    credential = data["store"].pop("credential")
    assert data.pop("store") == {
        k: v for k, v in store(store_type="IISU", store_path="WebHosting", protocol="http", port=5985).items()
        if k != "credential"
    }  # fmt: skip
    assert credential["kind"] == "inline"
    assert credential["username"] == "CONTOSO\\svc-certs"
    assert credential["password_plaintext"] is None
    assert decrypt_secret(credential["password_encrypted"], KEY) == "Winrm-S3cret!"
    certificate = data.pop("certificate")
    assert certificate["contents_plaintext"] is None and certificate["password_plaintext"] is None
    assert decrypt_secret(certificate["contents_encrypted"], KEY) == contents("iisu-add-winrm-camel.json")
    assert decrypt_secret(certificate["password_encrypted"], KEY) == "Pfx-Pa55!"
    assert data == {
        "job_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "schema_version": 1,
        "submitted_at": None,
        "job_type": "add",
        "entry_parameters": {
            "SiteName": "Shop",
            "IPAddress": "10.0.0.5",
            "Port": 8443,
            "HostName": "shop.contoso.com",
            "SniFlag": 1,
            "Protocol": "https",
            "ProviderName": None,
        },
        "overwrite": False,
        "include_chain": False,
        "exportable": False,
        "rewrap_legacy_pfx": False,
        "allow_takeover": False,
        "renewal_thumbprint": None,
        "alias": None,
    }
    assert_no_plaintext(job, contents("iisu-add-winrm-camel.json")[:64])


def test_iisu_renewal_properties_object_with_winrm_upper_case(client: Client) -> None:
    job = from_keyfactor(load("iisu-add-renewal.json"), client)
    assert isinstance(job, AddJob)
    data = wire(job)
    data.pop("certificate")
    assert data == {
        "job_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "schema_version": 1,
        "submitted_at": None,
        "store": store(store_type="IISU", client_machine="web02.contoso.com", spn_with_port=True),
        "job_type": "add",
        "entry_parameters": {
            "SiteName": "Default Web Site",
            "IPAddress": "*",
            "Port": 443,
            "HostName": "",
            "SniFlag": 0,
            "Protocol": "https",
            "ProviderName": None,
        },
        "overwrite": True,
        "include_chain": False,
        "exportable": False,
        "rewrap_legacy_pfx": False,
        "allow_takeover": False,
        "renewal_thumbprint": OLD,
        "alias": f"{OLD}:Default Web Site:*:443:",
    }


def test_iisu_alias_alone_marks_the_renewal(client: Client) -> None:
    config = load("iisu-add-renewal.json")
    del config["JobProperties"]["RenewalThumbprint"]
    job = from_keyfactor(config, client)
    assert isinstance(job, AddJob)
    assert job.renewal_thumbprint == OLD
    assert job.alias == f"{OLD}:Default Web Site:*:443:"


def test_iisbin_legacy_names_and_sni_label_become_iisu_with_a_deprecation_warning(client: Client) -> None:
    with pytest.warns(DeprecationWarning, match="IISBin store type .* deprecated; the job runs as IISU"):
        converted = parse_keyfactor(load("iisbin-add.json"), client)
    job = converted.job
    assert isinstance(job, AddJob)
    assert wire(job)["store"] == store(store_type="IISU", client_machine="legacy01.contoso.com")
    assert wire(job)["entry_parameters"] == {
        "SiteName": "Intranet",
        "IPAddress": "*",
        "Port": 443,
        "HostName": "intranet.contoso.com",
        "SniFlag": 1,
        "Protocol": "https",
        "ProviderName": None,
    }
    assert converted.notes == [
        "Capability 'CertStores.IISBin.Management': the IISBin store type (Keyfactor 1.x) is deprecated;"
        " the job runs as IISU. Convert the store to IISU (Keyfactor's IIS-Conversion.sql renames"
        " 'Site Name'/'Host Name')",
        'JobProperties["Site Name"], JobProperties["IP Address"], JobProperties["Host Name"],'
        ' JobProperties["Sni Flag"]: IISBin 1.x entry-parameter names; Keyfactor 2.0+ calls them'
        " SiteName, IPAddress, HostName, SniFlag",
    ]


@pytest.mark.parametrize(
    ("label", "flag"),
    [
        ("0 - No SNI", 0),
        ("1 - SNI Enabled", 1),
        ("2 - Non SNI Binding", 2),
        ("3 - SNI Binding", 3),
        ("true", 1),
    ],
)
def test_legacy_sni_flag_labels(client: Client, label: str, flag: int) -> None:
    config = load("iisbin-add.json")
    config["JobProperties"]["Sni Flag"] = label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        job = from_keyfactor(config, client)
    assert isinstance(job, AddJob)
    assert wire(job)["entry_parameters"]["SniFlag"] == flag


def test_iisu_remove_uses_the_alias_only(client: Client) -> None:
    job = from_keyfactor(load("iisu-remove.json"), client)
    assert isinstance(job, RemoveJob)
    assert wire(job) == {
        "job_id": "7d444840-9dc0-11d1-b245-5ffdce74fad2",
        "schema_version": 1,
        "submitted_at": None,
        "store": store(store_type="IISU"),
        "job_type": "remove",
        "alias": f"{THUMB}:Default Web Site:*:443:",
        "entry_parameters": None,  # the peer ignores them (SniFlag 1 without HostName is no error)
    }


def test_winsql_add_instances_restart_and_renewal(client: Client) -> None:
    job = from_keyfactor(load("winsql-add.json"), client)
    assert isinstance(job, AddJob)
    data = wire(job)
    credential = data["store"].pop("credential")
    assert data.pop("store") == {
        k: v
        for k, v in store(
            store_type="WinSQL", client_machine="sql01.contoso.com", restart_service=True
        ).items()
        if k != "credential"
    }
    # Top-level ServerUsername/ServerPassword win over the empty ones in Properties.
    assert credential["username"] == "CONTOSO\\svc-sql"
    assert decrypt_secret(credential["password_encrypted"], KEY) == "Sql-S3cret!"
    assert data["entry_parameters"] == {
        "InstanceName": ["MSSQLSERVER", "INST1"],
        "ProviderName": "Microsoft Software Key Storage Provider",
    }
    assert data["renewal_thumbprint"] == OLD
    assert data["alias"] is None
    assert_no_plaintext(job)


def test_restart_service_defaults_to_false(client: Client) -> None:
    """The peer's code default is true (defect B19); a missing RestartService means false here."""
    config = load("winsql-add.json")
    properties = json.loads(config["CertificateStoreDetails"]["Properties"])
    del properties["RestartService"]
    config["CertificateStoreDetails"]["Properties"] = json.dumps(properties)
    assert from_keyfactor(config, client).store.restart_service is False


def test_winsql_remove_keeps_instance_names(client: Client) -> None:
    config = load("winsql-add.json")
    config["OperationType"] = 3
    config["JobCertificate"] = {"Alias": THUMB.lower(), "Contents": None, "PrivateKeyPassword": None}
    job = from_keyfactor(config, client)
    assert isinstance(job, RemoveJob)
    assert job.alias == THUMB
    assert wire(job)["entry_parameters"] == {"InstanceName": ["MSSQLSERVER", "INST1"], "ProviderName": None}


def test_wincert_der_add_local_machine_no_password_and_non_uuid_job_id(client: Client) -> None:
    converted = parse_keyfactor(load("wincert-add-der-local.json"), client)
    job = converted.job
    assert isinstance(job, AddJob)
    assert wire(job)["store"] == store(
        client_machine="web01|LocalMachine", store_path="Root", protocol="http", port=5985
    )
    assert job.store.is_local
    assert job.certificate.password_encrypted is None  # null: no password
    assert job.certificate.contents_encrypted is not None
    assert decrypt_secret(job.certificate.contents_encrypted, KEY) == contents("wincert-add-der-local.json")
    assert job.entry_parameters is None
    assert converted.notes == ["JobId 'not-a-guid' is not a UUID; the job gets a new job_id"]
    assert isinstance(job.job_id, uuid.UUID)


def _pfx_b64(password: str | None) -> str:
    """A PKCS#12 file (base64) whose password is ``password``: None = no password at all,
    "" = the empty password (cryptography's unencrypted form, MAC keyed with "")."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    from producer.certinput.pkcs12_writer import legacy_pkcs12

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.contoso.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now).not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    if password is None:
        data = legacy_pkcs12(cert.public_bytes(serialization.Encoding.DER), key, [], None)
    else:
        data = pkcs12.serialize_key_and_certificates(b"shop", key, cert, None, serialization.NoEncryption())
    return base64.b64encode(data).decode("ascii")


def test_a_wrong_pfx_password_is_refused_naming_the_field(client: Client) -> None:
    config = load("iisu-add-winrm-camel.json")
    config["JobCertificate"]["PrivateKeyPassword"] = "not-the-password"
    with pytest.raises(KeyfactorConfigError, match="PrivateKeyPassword: pfx_password_incorrect"):
        from_keyfactor(config, client)


def test_empty_pfx_password_differs_from_none(client: Client) -> None:
    config = load("iisu-add-winrm-camel.json")
    config["JobCertificate"]["PrivateKeyPassword"] = ""
    config["JobCertificate"]["Contents"] = _pfx_b64("")
    job = from_keyfactor(config, client)
    assert isinstance(job, AddJob)
    assert job.certificate.password_encrypted is not None
    assert decrypt_secret(job.certificate.password_encrypted, KEY) == ""
    config["JobCertificate"]["PrivateKeyPassword"] = None
    config["JobCertificate"]["Contents"] = _pfx_b64(None)
    job = from_keyfactor(config, client)
    assert isinstance(job, AddJob)
    assert job.certificate.password_encrypted is None


def test_reenrollment_with_sans_dictionary(client: Client) -> None:
    job = from_keyfactor(load("iisu-reenrollment-sans.json"), client)
    assert isinstance(job, ReenrollmentJob)
    assert wire(job) == {
        "job_id": "a8098c1a-f86e-11da-bd1a-00112444be1e",
        "schema_version": 1,
        "submitted_at": None,
        "store": store(store_type="IISU", spn_with_port=True),
        "job_type": "reenrollment",
        "subject": 'CN=shop.contoso.com, O="Contoso, Inc", C=US',
        "key_algorithm": "RSA",
        "key_length": 3072,
        "provider_name": "Microsoft Software Key Storage Provider",
        "sans": [
            {"type": "dns", "value": "shop.contoso.com"},
            {"type": "dns", "value": "www.shop.contoso.com"},
            {"type": "ip", "value": "10.0.0.5"},
            {"type": "ip", "value": "2001:db8::5"},
            {"type": "email", "value": "pki@contoso.com"},
            {"type": "upn", "value": "svc@contoso.com"},
            {"type": "uri", "value": "https://shop.contoso.com/"},
        ],
        "entry_parameters": {
            "SiteName": "Shop",
            "IPAddress": "*",
            "Port": 443,
            "HostName": "shop.contoso.com",
            "SniFlag": 1,
            "Protocol": "https",
            "ProviderName": None,
        },
        "signer": None,
        "allow_takeover": False,
    }


def test_odkg_with_legacy_san_string_and_ecc(client: Client) -> None:
    job = from_keyfactor(load("wincert-odkg-legacy-san.json"), client)
    assert isinstance(job, ReenrollmentJob)
    assert wire(job) == {
        "job_id": "b3a1f6e0-7c2d-4f1e-8a9b-0c1d2e3f4a5b",
        "schema_version": 1,
        "submitted_at": None,
        "store": store(client_machine="web03.contoso.com"),
        "job_type": "reenrollment",
        "subject": "CN=web03.contoso.com",
        "key_algorithm": "ECDSA_P384",
        "key_length": None,
        "provider_name": "Microsoft Software Key Storage Provider",
        "sans": [
            {"type": "dns", "value": "web03.contoso.com"},
            {"type": "dns", "value": "web03"},
            {"type": "ip", "value": "10.0.0.7"},
        ],
        "entry_parameters": None,
        "signer": None,
        "allow_takeover": False,
    }


@pytest.mark.parametrize(
    ("capability", "kind"),
    [
        ("CertStores.WinCert.ODKG", ReenrollmentJob),
        ("certstores.wincert.reenrollment", ReenrollmentJob),
        ("CertStores.WinCert.Inventory", InventoryJob),
    ],
)
def test_capability_spellings(client: Client, capability: str, kind: type) -> None:
    config = load("wincert-odkg-legacy-san.json")
    config["Capability"] = capability
    assert isinstance(from_keyfactor(config, client), kind)


def test_keys_are_case_insensitive_and_properties_may_be_an_object(client: Client) -> None:
    as_string = load("iisu-remove.json")
    as_object = copy.deepcopy(as_string)
    properties = json.loads(as_object["CertificateStoreDetails"]["Properties"])
    as_object["CertificateStoreDetails"]["Properties"] = {k.lower(): v for k, v in properties.items()}
    as_object = {k[0].lower() + k[1:]: v for k, v in as_object.items()}  # camelCase top level
    assert wire(from_keyfactor(as_object, client)) == wire(from_keyfactor(as_string, client))


def test_json_text_is_accepted(client: Client) -> None:
    text = (FIXTURES / "wincert-inventory.json").read_text(encoding="utf-8")
    assert wire(from_keyfactor(text, client)) == wire(from_keyfactor(json.loads(text), client))


def test_missing_protocol_uses_http_as_the_peer_and_says_so(client: Client) -> None:
    config = load("wincert-inventory.json")
    config["CertificateStoreDetails"]["Properties"] = json.dumps({"spnwithport": "false"})
    converted = parse_keyfactor(config, client)
    assert (converted.job.store.protocol.value, converted.job.store.port) == ("http", None)
    assert converted.job.store.effective_port == 5985
    assert converted.notes == [
        'CertificateStoreDetails.Properties["WinRM Protocol"] is not set; using http as the Keyfactor'
        " orchestrator does (set it to https for TLS)"
    ]


def test_pipe_suffix_other_than_localmachine_connects_to_the_host(client: Client) -> None:
    config = load("wincert-inventory.json")
    config["CertificateStoreDetails"]["ClientMachine"] = "web01.contoso.com|store-2"
    converted = parse_keyfactor(config, client)
    assert converted.job.store.client_machine == "web01.contoso.com"
    assert converted.notes == [
        "CertificateStoreDetails.ClientMachine 'web01.contoso.com|store-2': the part after '|' is"
        " ignored (only '|LocalMachine' means local mode); connecting to 'web01.contoso.com'"
    ]


def test_jea_endpoint_property(client: Client) -> None:
    config = load("wincert-inventory.json")
    properties = json.loads(config["CertificateStoreDetails"]["Properties"])
    properties["JEAEndpointName"] = "KeyfactorWinCert"
    config["CertificateStoreDetails"]["Properties"] = json.dumps(properties)
    assert from_keyfactor(config, client).store.jea_endpoint == "KeyfactorWinCert"


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_are_refused_without_keys_unless_plaintext_is_allowed() -> None:
    with make_client(keys=False) as no_keys, pytest.raises(KeyfactorConfigError) as caught:
        from_keyfactor(load("iisu-add-winrm-camel.json"), no_keys)
    assert caught.value.field == "ServerPassword"
    assert "WINCERT_SECRET_KEYS is not set" in str(caught.value)
    assert "Winrm-S3cret!" not in str(caught.value)

    config = _props(load("iisu-add-winrm-camel.json"), ServerUsername="", ServerPassword="")
    config["ServerUsername"] = config["ServerPassword"] = ""
    with make_client(keys=False) as no_keys, pytest.raises(KeyfactorConfigError) as caught:
        from_keyfactor(config, no_keys)
    assert caught.value.field == "JobCertificate.Contents"

    with make_client(keys=False, plaintext=True) as dev:
        job = from_keyfactor(load("iisu-add-winrm-camel.json"), dev)
    assert isinstance(job, AddJob)
    assert job.store.credential is not None
    assert wire(job)["store"]["credential"]["password_plaintext"] == "Winrm-S3cret!"
    assert job.certificate.contents_plaintext is not None


def test_without_a_client_the_environment_keys_seal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINCERT_SECRET_KEYS", KEY)
    monkeypatch.delenv("WINCERT_ALLOW_PLAINTEXT_SECRETS", raising=False)
    job = from_keyfactor(load("winsql-add.json"))
    credential = wire(job)["store"]["credential"]
    assert decrypt_secret(credential["password_encrypted"], KEY) == "Sql-S3cret!"
    assert_no_plaintext(job)


def test_empty_credentials_mean_the_workers_identity(client: Client) -> None:
    for name in ("wincert-inventory.json", "iisu-add-renewal.json", "iisbin-add.json", "iisu-remove.json"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert from_keyfactor(load(name), client).store.credential is None, name


def test_credentials_in_properties_are_used_when_top_level_is_empty(client: Client) -> None:
    config = load("iisu-add-winrm-camel.json")
    config["ServerUsername"] = config["ServerPassword"] = None
    credential = wire(from_keyfactor(config, client))["store"]["credential"]
    assert credential["username"] == "CONTOSO\\svc-certs"
    assert decrypt_secret(credential["password_encrypted"], KEY) == "Winrm-S3cret!"


# --- errors name the Keyfactor field -------------------------------------------------------------


def _props(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    properties = json.loads(config["CertificateStoreDetails"]["Properties"])
    properties.update(changes)
    config["CertificateStoreDetails"]["Properties"] = json.dumps(properties)
    return config


def _set(config: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return config


PROPS = "CertificateStoreDetails.Properties"
ERRORS: list[tuple[str, Any, str, str]] = [
    (
        "iisu-add-winrm-camel.json",
        lambda c: _props(c, **{"WinRm Port": "59x6"}),
        f'{PROPS}["WinRm Port"]',
        "'59x6' is not a port number; give 1-65535",
    ),
    (
        "wincert-inventory.json",
        lambda c: _props(c, **{"WinRM Port": "70000"}),
        f'{PROPS}["WinRM Port"]',
        "70000 is not a TCP port; give 1-65535",
    ),
    (
        "wincert-inventory.json",
        lambda c: _props(c, **{"WinRM Protocol": "ftp"}),
        f'{PROPS}["WinRM Protocol"]',
        "'ftp' is not a WinRM protocol; give https or http",
    ),
    (
        "wincert-inventory.json",
        lambda c: _props(c, spnwithport="maybe"),
        f'{PROPS}["spnwithport"]',
        "'maybe' is not a boolean",
    ),
    (
        "wincert-inventory.json",
        lambda c: _props(c, **{"WinRm Port": "5985"}),
        f'{PROPS}["WinRm Port"]',
        "given twice with different values (also as 'WinRM Port')",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("CertificateStoreDetails", "Properties"), "{not json"),
        PROPS,
        "is not valid JSON",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("Capability",), "CertStores.WinAdfs.Inventory"),
        "Capability",
        "store type 'WinAdfs' is not supported (WinAdfs stores are not supported)",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("Capability",), "CertStores.IISU.Discovery"),
        "Capability",
        "job type 'Discovery' is not supported",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("Capability",), "IISU"),
        "Capability",
        "'IISU' is not CertStores.<Type>.<Job>",
    ),
    ("wincert-inventory.json", lambda c: c.pop("Capability") and c, "Capability", "missing"),
    (
        "iisu-remove.json",
        lambda c: _set(c, ("OperationType",), 4),
        "OperationType",
        "4 is not supported; give 2 (Add) or 3 (Remove)",
    ),
    ("iisu-remove.json", lambda c: c.pop("OperationType") and c, "OperationType", "missing"),
    (
        "iisu-remove.json",
        lambda c: _set(c, ("JobCertificate", "Alias"), ""),
        "JobCertificate.Alias",
        "missing; give the alias from inventory",
    ),
    (
        "iisu-remove.json",
        lambda c: _set(c, ("JobCertificate", "Alias"), f"{THUMB}:Default Web Site"),
        "JobCertificate.Alias",
        "the port part '' is not 1-65535",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("JobProperties", "SiteName"), "  "),
        'JobProperties["SiteName"]',
        "is blank; name an existing IIS site",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("JobProperties", "HostName"), ""),
        "JobProperties",
        "SniFlag has the SNI bit (1) set but HostName is empty",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("JobProperties", "Protocol"), "http"),
        'JobProperties["Protocol"]',
        "Input should be 'https'",
    ),
    (
        "iisbin-add.json",
        lambda c: _set(c, ("JobProperties", "IP Address"), "10.0.0.300"),
        'JobProperties["IP Address"]',
        "is not '*', an IPv4 address or an IPv6 address",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("CertificateStoreDetails", "StorePath"), "Root"),
        "CertificateStoreDetails.StorePath",
        "'Root' is not valid for IISU stores; use My or WebHosting",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("CertificateStoreDetails", "ClientMachine"), "web 01"),
        "CertificateStoreDetails.ClientMachine",
        "'web 01' is not a valid host",
    ),
    (
        "wincert-inventory.json",
        lambda c: _set(c, ("CertificateStoreDetails", "ClientMachine"), ""),
        "CertificateStoreDetails.ClientMachine",
        "missing",
    ),
    (
        "wincert-add-der-local.json",
        lambda c: _props(c, JEAEndpointName="KeyfactorWinCert"),
        "CertificateStoreDetails",
        "jea_endpoint cannot be combined with local mode",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("JobCertificate", "Contents"), "not base64!"),
        "JobCertificate.Contents",
        "is not base64 text",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("JobCertificate", "Contents"), None),
        "JobCertificate.Contents",
        "missing",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _props(_set(c, ("ServerUsername",), ""), ServerUsername=""),
        "ServerUsername",
        "missing while ServerPassword is set",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("ServerUsername",), "CONTOSO\\svc\nx"),
        "ServerUsername",
        "must not contain control characters",
    ),
    (
        "iisu-add-winrm-camel.json",
        lambda c: _set(c, ("Overwrite",), "yes"),
        "Overwrite",
        "'yes' is not a boolean",
    ),
    (
        "iisu-add-renewal.json",
        lambda c: _set(c, ("JobProperties", "RenewalThumbprint"), "XYZ"),
        'JobProperties["RenewalThumbprint"]',
        "",
    ),
    (
        "iisu-reenrollment-sans.json",
        lambda c: _set(c, ("JobProperties", "keySize"), "1024"),
        'JobProperties["keySize"]',
        "key_length 1024 is not 2048, 3072 or 4096",
    ),
    (
        "iisu-reenrollment-sans.json",
        lambda c: _set(c, ("JobProperties", "keyType"), "DSA"),
        'JobProperties["keyType"]',
        "'DSA' is not a supported key type",
    ),
    (
        "wincert-odkg-legacy-san.json",
        lambda c: _set(c, ("JobProperties", "keySize"), "521"),
        'JobProperties["keySize"]',
        "521 is not a supported ECC key size; give 256 or 384",
    ),
    (
        "iisu-reenrollment-sans.json",
        lambda c: _set(c, ("SANs", "x400"), ["o=contoso"]),
        'SANs["x400"]',
        "is not a SAN type",
    ),
    (
        "iisu-reenrollment-sans.json",
        lambda c: _set(c, ("SANs", "ip4"), ["10.0.0.999"]),
        "SANs",
        "SAN ip '10.0.0.999' is not an IP address",
    ),
    (
        "wincert-odkg-legacy-san.json",
        lambda c: _set(c, ("JobProperties", "SAN"), "dns=a.com&x400=b"),
        'JobProperties["SAN"]',
        "SAN entry 'x400=b' is not type=value",
    ),
    (
        "iisu-reenrollment-sans.json",
        lambda c: _set(c, ("JobProperties", "subjectText"), ""),
        'JobProperties["subjectText"]',
        "missing; give the X.500 subject",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "field", "message"), ERRORS, ids=[e[2] + ":" + e[3][:30] for e in ERRORS]
)
def test_errors_name_the_keyfactor_field(
    client: Client, name: str, change: Any, field: str, message: str
) -> None:
    config = change(load(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(KeyfactorConfigError) as caught:
            from_keyfactor(config, client)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field, str(error)
    assert message in error.problems[0][1], str(error)
    assert str(error).startswith(f"{field}: ")
    for secret in SECRETS:
        assert secret not in str(error)


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(KeyfactorConfigError, match=r"^job configuration: is not valid JSON"):
        from_keyfactor("{")
    with pytest.raises(KeyfactorConfigError, match=r"^job configuration: must be a JSON object"):
        from_keyfactor("[1]")


# --- rendering in Keyfactor's shapes ----------------------------------------------------------------


def _item(alias: str, parameters: dict[str, Any], key: bool = True) -> CertificateItem:
    return CertificateItem(
        alias=alias,
        thumbprint=THUMB,
        subject="CN=shop.contoso.com",
        issuer="CN=shop.contoso.com",
        serial_number="1234",
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2034, 12, 30, tzinfo=UTC),
        has_private_key=key,
        der_b64="MIIBRDCB66ADAgECAgISNDAK",
        parameters=parameters,
    )


JOB_ID = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
IIS_PARAMETERS = {
    "SiteName": "Default Web Site",
    "Port": "443",
    "IPAddress": "*",
    "HostName": "",
    "SniFlag": "0",
    "Protocol": "https",
}


def test_inventory_result_in_keyfactor_shapes() -> None:
    result = JobResult(
        job_id=JOB_ID,
        job_type="inventory",
        store_type="IISU",
        status="warning",
        code="partial",
        message="2 bindings",
        warnings=["Skipped binding Shop *:8443:: certificate AB is not in LocalMachine\\My"],
        items=[
            _item(f"{THUMB}:Default Web Site:*:443:", IIS_PARAMETERS),
            _item(THUMB, {"InstanceName": "MSSQLSERVER,INST1"}, key=False),
        ],
    )
    assert to_keyfactor_result(result, 2002) == {
        "Result": "Warning",
        "JobHistoryId": 2002,
        "FailureMessage": "2 bindings (code: partial) Warnings: Skipped binding Shop *:8443:: certificate"
        " AB is not in LocalMachine\\My",
    }
    assert to_keyfactor_inventory(result) == [
        {
            "Alias": f"{THUMB}:Default Web Site:*:443:",
            "PrivateKeyEntry": True,
            "UseChainLevel": False,
            "ItemStatus": "Unknown",
            "Certificates": ["MIIBRDCB66ADAgECAgISNDAK"],
            "Parameters": IIS_PARAMETERS,
        },
        {
            "Alias": THUMB,
            "PrivateKeyEntry": False,
            "UseChainLevel": False,
            "ItemStatus": "Unknown",
            "Certificates": ["MIIBRDCB66ADAgECAgISNDAK"],
            "Parameters": {"InstanceName": "MSSQLSERVER,INST1"},
        },
    ]
    assert keyfactor_output(result, 2002) == {
        "JobResult": to_keyfactor_result(result, 2002),
        "Inventory": to_keyfactor_inventory(result),
    }


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("success", "ok", {"Result": "Success", "JobHistoryId": 0, "FailureMessage": "added"}),
        ("success", "already_present", {"Result": "Success", "JobHistoryId": 0, "FailureMessage": "added"}),
        (
            "failure",
            "site_not_found",
            {"Result": "Failure", "JobHistoryId": 0, "FailureMessage": "added (code: site_not_found)"},
        ),
    ],
)
def test_job_result_statuses(status: str, code: str, expected: dict[str, Any]) -> None:
    result = JobResult(
        job_id=JOB_ID, job_type="add", status=status, code=code, message="added", thumbprint=THUMB
    )
    assert to_keyfactor_result(result) == expected
    assert keyfactor_output(result) == {"JobResult": expected}
    with pytest.raises(ValueError, match="is a add result, not an inventory result"):
        to_keyfactor_inventory(result)


def test_empty_inventory_renders_an_empty_list() -> None:
    result = JobResult(
        job_id=JOB_ID, job_type="inventory", status="success", code="ok", message="0", items=[]
    )
    assert to_keyfactor_inventory(result) == []
    assert keyfactor_output(result, 5)["Inventory"] == []
