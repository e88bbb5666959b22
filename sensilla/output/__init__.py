"""Flow output formats, as the hubble CLI prints them.

    printer = make_printer("compact", PrinterOptions(out=sys.stdout, err=sys.stderr))
    for response in stream:          # observer.GetFlowsResponse
        printer.write(response)
    printer.close()

Formats live in sensilla/output/formats/, one module each (``FORMATS`` mapping names
to Printer classes); adding a format is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from sensilla.output import formats as _formats
from sensilla.output.base import Printer, PrinterOptions


def available_formats() -> dict[str, type[Printer]]:
    found: dict[str, type[Printer]] = {}
    for info in sorted(pkgutil.iter_modules(_formats.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_formats.__name__}.{info.name}")
        found.update(getattr(module, "FORMATS", {}))
    return found


def make_printer(name: str, opts: PrinterOptions | None = None) -> Printer:
    formats = available_formats()
    if name not in formats:
        raise ValueError(f"invalid output format: {name} (one of {', '.join(sorted(formats))})")
    return formats[name](opts or PrinterOptions())


__all__ = ["Printer", "PrinterOptions", "available_formats", "make_printer"]
