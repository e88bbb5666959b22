"""Kubernetes name rules: label keys and values, DNS names, IANA service (port) names.

Each check returns a list of problems (empty when valid), phrased like apimachinery's
`validation.Is…` helpers.
"""

from __future__ import annotations

import re

_QNAME_CHAR = "[A-Za-z0-9]"
_QNAME_EXT = "[-A-Za-z0-9_.]"
QUALIFIED_NAME_RE = re.compile(f"^({_QNAME_CHAR}{_QNAME_EXT}*)?{_QNAME_CHAR}$")
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
DNS1123_SUBDOMAIN_MAX = 253
PORT_NAME_MAX = 15
_PORT_NAME_CHARS_RE = re.compile(r"^[-a-z0-9]+$")
_PORT_NAME_LETTER_RE = re.compile(r"[a-z]")

_QNAME_FMT = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return errs


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not DNS1123_LABEL_RE.match(value):
        errs.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character"
        )
    return errs


def qualified_name(value: str) -> list[str]:
    """A label key: an optional DNS subdomain prefix and '/', then a name."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        errs = [f"prefix part {e}" for e in dns1123_subdomain(prefix)]
        if errs:
            return errs
    else:
        return [
            "a qualified name " + _QNAME_FMT + " with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    errs = []
    if len(name) > QUALIFIED_NAME_MAX:
        errs.append(f"name part must be no more than {QUALIFIED_NAME_MAX} characters")
    if not QUALIFIED_NAME_RE.match(name):
        errs.append("name part " + _QNAME_FMT)
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(f"must be no more than {LABEL_VALUE_MAX} characters")
    if value and not QUALIFIED_NAME_RE.match(value):
        errs.append(
            "a valid label "
            + _QNAME_FMT.replace("must consist", "must be an empty string or consist")
        )
    return errs


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME (RFC 6335), as Kubernetes validates named ports."""
    errs = []
    if len(value) > PORT_NAME_MAX:
        errs.append(f"must be no more than {PORT_NAME_MAX} characters")
    if not _PORT_NAME_CHARS_RE.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not _PORT_NAME_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_number(value: int) -> list[str]:
    if 1 <= value <= 65535:
        return []
    return ["must be between 1 and 65535, inclusive"]
