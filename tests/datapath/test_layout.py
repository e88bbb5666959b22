"""Every layout in bpf/sensilla.h agrees with its mirror in datapath/layout.py:
a probe compiled against the header prints sizes, offsets and constants."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bpf
from datapath import layout as L

pytestmark = pytest.mark.unit


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "sensilla.h"',
        "int main(void) {",
    ]
    for cname, struct in L.STRUCTS.items():
        lines.append(f'printf("S {cname} %zu\\n", sizeof(struct {cname}));')
        for field, _ in struct._fields_:  # type: ignore[misc]
            lines.append(
                f'printf("F {cname}.{field} %zu %zu\\n", offsetof(struct {cname}, {field}), '
                f"sizeof(((struct {cname} *)0)->{field}));"
            )
    for name in L.CONSTANTS:
        lines.append(f'printf("C {name} %llu\\n", (unsigned long long)({name}));')
    lines.append("return 0; }")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, ...]]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler to build the layout probe")
    d: Path = tmp_path_factory.mktemp("layout")
    src = d / "probe.c"
    src.write_text(_probe_source())
    exe = d / "probe"
    subprocess.run([cc, "-I", str(bpf.SOURCE_DIR), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result: dict[str, tuple[int, ...]] = {}
    for line in out.splitlines():
        kind, name, *nums = line.split()
        result[f"{kind} {name}"] = tuple(int(n) for n in nums)
    return result


@pytest.mark.parametrize("cname", sorted(L.STRUCTS))
def test_struct_layout(probe: dict[str, tuple[int, ...]], cname: str) -> None:
    struct = L.STRUCTS[cname]
    assert probe[f"S {cname}"] == (ctypes.sizeof(struct),), cname
    for field, ctype in struct._fields_:  # type: ignore[misc]
        desc = getattr(struct, field)
        got = probe[f"F {cname}.{field}"]
        assert got == (desc.offset, ctypes.sizeof(ctype)), f"{cname}.{field}"


def test_constants(probe: dict[str, tuple[int, ...]]) -> None:
    for name, value in L.CONSTANTS.items():
        assert probe[f"C {name}"] == (value,), name


def test_every_header_struct_has_a_mirror() -> None:
    import re

    text = (bpf.SOURCE_DIR / "sensilla.h").read_text()
    declared = set(re.findall(r"^struct (\w+) \{", text, flags=re.M))
    assert declared == set(L.STRUCTS)


def test_event_dtype_matches_ctypes() -> None:
    ev = L.FlowEvent(ts_ns=12345, ifindex=7, sport=80, dport=443, drop_reason=133, flags=9)
    ev.saddr[0] = 10
    arr = np.frombuffer(bytes(ev), dtype=L.EVENT_DTYPE)
    assert L.EVENT_DTYPE.itemsize == ctypes.sizeof(L.FlowEvent)
    assert int(arr["ts_ns"][0]) == 12345
    assert int(arr["ifindex"][0]) == 7
    assert (int(arr["sport"][0]), int(arr["dport"][0])) == (80, 443)
    assert int(arr["drop_reason"][0]) == 133
    assert int(arr["flags"][0]) == 9
    assert int(arr["saddr"][0][0]) == 10
