"""Go's text/tabwriter, as Hubble's table output configures it (minwidth 2, tab width
0, padding 3, space padding, no flags): cells are tab-terminated, the last cell of a
line is not aligned, and each run of lines sharing a column is aligned on its own."""

from __future__ import annotations


def format_table(text: str, minwidth: int = 2, padding: int = 3) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    trailing_newline = text.endswith("\n")
    if trailing_newline:
        lines.pop()
    out: list[str] = []
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            line = lines[i]
            for j, cell in enumerate(line):
                out.append(cell)
                if j < len(widths):
                    out.append(" " * max(0, widths[j] - len(cell)))
            if i + 1 < len(lines) or trailing_newline:
                out.append("\n")

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "".join(out)
