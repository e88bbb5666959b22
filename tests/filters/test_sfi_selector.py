"""The label selector parser: Hubble's translation, Kubernetes' grammar, Cilium labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensilla.filters.selector import (
    Label,
    Requirement,
    canonical_label,
    parse_go_int64,
    parse_label,
    parse_selector,
    selector_matches,
    translate_selector,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("selector", "translated"),
    [
        ("bar=baz,k8s:app=hubble,reserved:world", "any.bar=baz,k8s.app=hubble,reserved.world"),
        (
            "any:dash-label.com,k8s:io.cilium in (is-awesome,rocks)",
            "any.dash-label.com,k8s.io.cilium in (is-awesome,rocks)",
        ),
        ("!k8s:app, tier notin (a, b)", "!k8s.app, any.tier notin (a, b)"),
        ("any:k8s:bla", "any.k8s:bla"),
        ("", ""),
    ],
)
def test_sfi_translate(selector: str, translated: str) -> None:
    assert translate_selector(selector) == translated


def test_sfi_parse_requirements() -> None:
    assert parse_selector("k8s:app=web, !reserved:world, tier in (a,b), x notin (), n>5") == (
        Requirement("k8s", "app", "=", ("web",)),
        Requirement("reserved", "world", "!", ()),
        Requirement("any", "tier", "in", ("a", "b")),
        Requirement("any", "x", "notin", ("",)),
        Requirement("any", "n", "gt", ("5",)),
    )
    assert parse_selector("k8s:app.kubernetes.io/name==db") == (
        Requirement("k8s", "app.kubernetes.io/name", "==", ("db",)),
    )
    assert parse_selector("app=") == (Requirement("any", "app", "=", ("",)),)
    assert parse_selector("a in (,)") == (Requirement("any", "a", "in", ("",)),)
    # "in" and "notin" are values where a value is expected
    assert parse_selector("a in (in, notin)") == (Requirement("any", "a", "in", ("in", "notin")),)
    assert parse_selector("") == ()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("k8s:app=web", Label("k8s", "app", "web")),
        ("reserved:world", Label("reserved", "world", "")),
        ("$host", Label("reserved", "host", "")),
        ("reserved.health", Label("reserved", "health", "")),
        ("app=a=b", Label("unspec", "app", "a=b")),
        ("k8s:a:b=c", Label("k8s", "a:b", "c")),
        ("reserved:=x", Label("reserved", "x", "")),
        ("", Label("unspec", "", "")),
    ],
)
def test_sfi_cilium_labels(text: str, label: Label) -> None:
    assert parse_label(text) == label


def test_sfi_canonical_labels() -> None:
    assert canonical_label("k8s:app=web") == "k8s:app=web"
    assert canonical_label("k8s:app=") == "k8s:app"
    assert canonical_label("$host") == "reserved:host"
    assert canonical_label("key") == "unspec:key"
    assert canonical_label("reserved:=a=b") is None


def test_sfi_go_integers() -> None:
    assert parse_go_int64("+7") == 7
    assert parse_go_int64("-9223372036854775808") == -(2**63)
    assert parse_go_int64("9223372036854775808") is None
    assert parse_go_int64("0x10") is None
    assert parse_go_int64(" 1") is None
    assert parse_go_int64("1_0") is None


def test_sfi_matching_semantics() -> None:
    labels = [parse_label(x) for x in ("k8s:app=web", "container:app=db", "k8s:tier=5")]
    assert selector_matches(parse_selector("app=web"), labels)
    assert not selector_matches(parse_selector("container:app=web"), labels)
    assert selector_matches(parse_selector("container:app=db"), labels)
    assert selector_matches(parse_selector("tier>4,tier<6"), labels)
    assert selector_matches(parse_selector("missing notin (x)"), labels)
    assert not selector_matches(parse_selector("missing in (x)"), labels)
    assert selector_matches(parse_selector("app!=db"), labels)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ak8s:=!,() <>-._/in notin0$\t"), max_size=40))
def test_sfi_parser_never_crashes(text: str) -> None:
    try:
        reqs = parse_selector(text)
    except ValueError:
        return
    for r in reqs:
        assert r.op in ("in", "notin", "=", "==", "!=", "exists", "!", "gt", "lt")
        assert r.source and r.key


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_sfi_parser_never_crashes_on_any_text(text: str) -> None:
    try:
        parse_selector(text)
    except ValueError:
        pass
