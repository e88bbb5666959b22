"""Typed parameters: strict checks, and encodings that carry any value as data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.store.params import (
    ParamError,
    bind_chdb,
    bind_driver,
    check_value,
    encode_chdb,
    parse_type,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ptype", "value"),
    [
        ("UInt8", 256),
        ("UInt8", -1),
        ("UInt64", 2**64),
        ("Int64", 2**63),
        ("UInt16", True),
        ("UInt32", "5"),
        ("UInt32", 5.0),
        ("String", 5),
        ("String", None),
        ("String", "\ud800"),
        ("DateTime", -1),
        ("Float64", float("nan")),
        ("Array(String)", "abc"),
        ("Array(UInt8)", [1, 300]),
        ("Set(String)", []),
    ],
)
def test_sst_param_rejects_values_of_the_wrong_type(ptype: str, value: object) -> None:
    with pytest.raises(ParamError):
        check_value("p", parse_type(ptype), value)


@pytest.mark.parametrize("ptype", ["Nullable(String)", "Array(Array(String))", "Map", "x"])
def test_sst_param_rejects_unknown_types(ptype: str) -> None:
    with pytest.raises(ParamError):
        parse_type(ptype)


def test_sst_param_missing_value_names_it() -> None:
    with pytest.raises(ParamError, match="'who'"):
        bind_chdb("SELECT {who:String}", {})
    with pytest.raises(ParamError, match="'who'"):
        bind_driver("SELECT {who:String}", {})


def test_sst_chdb_encoding_escapes_everything_special() -> None:
    t = parse_type("String")
    assert encode_chdb(t, "a'b\\c\nd\te\x00") == "a\\'b\\\\c\\x0Ad\\x09e\\x00"
    assert encode_chdb(t, b"\xff\x00'") == "\\xFF\\x00\\'"
    assert encode_chdb(parse_type("Array(String)"), ["x'", "\\"]) == "['x\\'','\\\\']"
    assert encode_chdb(parse_type("Array(UInt8)"), [1, 2]) == "[1,2]"


def test_sst_chdb_binding_keeps_values_out_of_the_sql() -> None:
    sql, enc = bind_chdb(
        "SELECT {s:String}, {t:DateTime}, {n:Set(UInt16)}",
        {"s": "'); DROP TABLE x; --", "t": 0, "n": {3, 1}},
    )
    assert "DROP" not in sql
    assert sql == "SELECT {s:String}, toDateTime({t:UInt32}), {n:Array(UInt16)}"
    assert enc == {"s": "\\'); DROP TABLE x; --", "t": "0", "n": "[1,3]"}


def test_sst_driver_binding() -> None:
    sql, values = bind_driver(
        "SELECT {s:String}, {b:String}, {t:DateTime}, {n:Set(UInt16)}, {a:Array(String)}, 5 % 2",
        {"s": "x'y", "b": b"\x00'", "t": 7, "n": [1], "a": []},
    )
    assert sql == (
        "SELECT %(s)s, unhex('0027'), toDateTime(7), %(n)s, CAST(%(a)s AS Array(String)), 5 %% 2"
    )
    assert values == {"s": "x'y", "n": (1,), "a": []}


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_sst_chdb_string_encoding_is_ascii_safe_and_reversible(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    enc = encode_chdb(parse_type("String"), text)
    # no raw control characters or unescaped quotes reach the engine
    assert not any(ord(c) < 0x20 for c in enc)
    decoded = enc.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
    assert decoded == text
