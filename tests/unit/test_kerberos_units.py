"""Kerberos pieces without a KDC: the SPN rule, field validation, credential material, error mapping."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from producer.codes import ResultCode
from producer.messages import StoreRef
from worker.credential_material import MaterialError, parse_material
from worker.credentials import Credential
from worker.remote import kerberos


def _store(**extra: Any) -> StoreRef:
    return StoreRef.model_validate(
        {"store_type": "WinCert", "client_machine": "web01.contoso.com", "store_path": "My", **extra}
    )


def test_the_spn_is_http_host_as_windows_asks_for_it() -> None:
    assert _store().spn == "HTTP/web01.contoso.com"
    assert _store(protocol="http", spn_with_port=True).spn == "HTTP/web01.contoso.com:5985"
    assert _store(spn_service="WSMAN", spn_hostname="web01-alias.contoso.com").spn == (
        "WSMAN/web01-alias.contoso.com"
    )


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("spn_hostname", "10.0.0.5", "IP address"), ("spn_service", "HTTP/x", "SPN service class")],
)
def test_spn_fields_are_validated_naming_the_fix(field: str, value: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        _store(**{field: value})
    assert needle in str(info.value) and field in str(info.value)


def test_pypsrp_gets_the_spn_parts_and_no_password_for_a_keytab() -> None:
    material = parse_material({"username": "svc@CONTOSO.COM", "keytab": "/etc/wincert/svc.keytab"}, "x")
    credential = Credential("credential 'svc'", "svc@CONTOSO.COM", SecretStr(""), material)
    store = _store(protocol="http", spn_with_port=True, auth="kerberos")
    kwargs = kerberos.wsman_kerberos_kwargs(store, credential)
    assert kwargs["negotiate_service"] == "HTTP"
    assert kwargs["negotiate_hostname_override"] == "web01.contoso.com:5985"
    assert kwargs["password"] is None and type(kwargs["username"]).__name__ == "KerberosKeytab"


def test_an_ip_target_without_override_is_refused_before_connecting() -> None:
    credential = Credential("credential 'a'", "a@CONTOSO.COM", SecretStr("pw"))
    with pytest.raises(kerberos.TransportFailureError) as info:
        kerberos.wsman_kerberos_kwargs(_store(client_machine="192.0.2.7", auth="kerberos"), credential)
    assert info.value.code is ResultCode.KERBEROS_IP_TARGET
    # negotiate to an address is allowed: Windows falls back to NTLM
    assert kerberos.wsman_kerberos_kwargs(_store(client_machine="192.0.2.7"), credential)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"keytab": "/k", "ccache": "default"}, "not both"),
        ({"keytab": "/k"}, "needs 'username'"),
        ({"certificate_file": "/c.pem"}, "needs 'private_key_file'"),
        ({"private_key": ""}, "non-empty string"),
    ],
)
def test_malformed_material_is_named(entry: dict[str, Any], needle: str) -> None:
    with pytest.raises(MaterialError, match=needle):
        parse_material(entry, "credential 'x'")


def test_a_gss_error_in_the_chain_is_classified_by_its_minor_code() -> None:
    class GSSError(Exception):  # the shape of gssapi.raw.misc.GSSError
        def __init__(self, minor: int) -> None:
            super().__init__("Clock skew too great")
            self.min_code = minor

    try:
        try:
            raise GSSError(kerberos.AP_ERR_SKEW + 2**32)
        except GSSError as inner:
            raise RuntimeError("Processing security token") from inner
    except RuntimeError as exc:
        credential = Credential("credential 'a'", "a@CONTOSO.COM", SecretStr("pw"))
        found = kerberos.classify_kerberos(exc, _store(auth="kerberos"), credential)
    assert found is not None and found[0] is ResultCode.KERBEROS_CLOCK_SKEW
    assert "HTTP/web01.contoso.com" in found[1]
