"""The eBPF sources: `sensilla.c` (the TC programs) and `sensilla.h` (every layout
shared with user space). `datapath` compiles them with bcc; this module only
locates them and fingerprints them."""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
PROGRAM = SOURCE_DIR / "sensilla.c"
HEADER = SOURCE_DIR / "sensilla.h"
SOURCES = (PROGRAM, HEADER)


def source_text() -> str:
    """The program's C source (it includes sensilla.h from SOURCE_DIR)."""
    return PROGRAM.read_text()


def source_hash(*extra: str) -> bytes:
    """SHA-256 over the sources and `extra` strings (compiler flags, versions):
    a loaded program whose recorded hash equals this one needs no recompile."""
    h = hashlib.sha256()
    for path in SOURCES:
        data = path.read_bytes()
        h.update(path.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    for item in extra:
        h.update(b"\1" + item.encode())
    return h.digest()
