"""X.500 subjects for reenrollment: parsing the forms users write, the canonical form sent."""

from __future__ import annotations

import pytest

from producer.subject import canonical_subject, parse_subject


@pytest.mark.parametrize(
    ("text", "rdns", "canonical"),
    [
        ("CN=web01.contoso.com", [("CN", "web01.contoso.com")], "CN=web01.contoso.com"),
        (
            'CN=web01, O="Contoso, Inc", C=US',
            [("CN", "web01"), ("O", "Contoso, Inc"), ("C", "US")],
            'CN=web01, O="Contoso, Inc", C=US',
        ),
        (
            "CN=web01,O=Keyfactor\\, Inc",
            [("CN", "web01"), ("O", "Keyfactor, Inc")],
            'CN=web01, O="Keyfactor, Inc"',
        ),
        ('CN=a, O="say ""hi"""', [("CN", "a"), ("O", 'say "hi"')], 'CN=a, O="say ""hi"""'),
        ("CN=a, OU=, O=b", [("CN", "a"), ("OU", ""), ("O", "b")], 'CN=a, OU="", O=b'),
        (
            "cn=a;st=Texas;emailAddress=x@y.z",
            [("CN", "a"), ("S", "Texas"), ("E", "x@y.z")],
            "CN=a, S=Texas, E=x@y.z",
        ),
        ("CN=$(whoami); O=`id`", [("CN", "$(whoami)"), ("O", "`id`")], "CN=$(whoami), O=`id`"),
        ("OID.2.5.4.3=x", [("OID.2.5.4.3", "x")], "OID.2.5.4.3=x"),
    ],
)
def test_subjects(text: str, rdns: list[tuple[str, str]], canonical: str) -> None:
    assert parse_subject(text) == rdns
    assert canonical_subject(text) == canonical
    assert parse_subject(canonical) == rdns  # the canonical form reads back the same


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('CN="open', "unterminated quoted value for CN"),
        ("XX=1", "subject attribute 'XX' is not known"),
        ("CN=a+O=b", "multi-valued RDNs"),
        ("", "subject is empty"),
        ("CN", "expected ATTR=value at position 1"),
        ("CN=a,", "trailing separator"),
    ],
)
def test_bad_subjects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        parse_subject(text)
