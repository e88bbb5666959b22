"""Kubernetes label selectors over Cilium labels, as Hubble's label filter reads them.

A selector is Kubernetes' set-based syntax (``k8s.io/apimachinery`` labels.Parse):
``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
``key in (a,b)``, ``key notin (a,b)``, ``key>N``, ``key<N``, comma-separated (AND).

Keys may carry a Cilium source prefix, ``k8s:app=foo`` or ``reserved:world``; a key
without one gets ``any:`` (matches the key from any source), exactly as Hubble's
labelparser translates selectors before handing them to the Kubernetes parser.

Flow labels are Cilium label strings ``source:key=value`` (parsed as Cilium's
ParseLabel does: ``$x`` is ``reserved:x``, no source is ``unspec``). A key lookup
returns the value of the first label with that key (and source, unless ``any``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# --- Cilium labels -------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    source: str
    key: str
    value: str


@functools.lru_cache(maxsize=65536)
def parse_label(text: str) -> Label:
    """Cilium's labels.ParseLabel (':' delimiter)."""
    if text.startswith("$"):
        source, rest = "reserved", text[1:]
    elif ":" in text:
        source, _, rest = text.partition(":")
    elif text.startswith("reserved."):
        source, rest = "reserved", text[len("reserved.") :]
    else:
        source, rest = "", text
    if not source:
        source = "unspec"
    i = rest.find("=")
    if i < 0:
        return Label(source, rest, "")
    if i == 0 and source == "reserved":
        return Label(source, rest[1:], "")
    return Label(source, rest[:i], rest[i + 1 :])


@functools.lru_cache(maxsize=65536)
def canonical_label(text: str) -> str | None:
    """The stored form of a flow label: Cilium's Label.String() ("source:key=value",
    or "source:key" without a value). Labels whose key contains "=" (only possible
    as "reserved:=a=b") can never match a selector and are not stored (None)."""
    label = parse_label(text)
    if "=" in label.key:
        return None
    if label.value:
        return f"{label.source}:{label.key}={label.value}"
    return f"{label.source}:{label.key}"


# --- Kubernetes validation -----------------------------------------------------------

_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _check_key(key: str) -> None:
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            raise ValueError(f"invalid label key {key!r}: prefix part must be non-empty")
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            raise ValueError(
                f"invalid label key {key!r}: prefix part must be a lowercase DNS subdomain"
            )
    else:
        raise ValueError(
            f"invalid label key {key!r}: a qualified name must consist of alphanumeric "
            "characters, '-', '_' or '.' with an optional DNS subdomain prefix and '/'"
        )
    if not name:
        raise ValueError(f"invalid label key {key!r}: name part must be non-empty")
    if len(name) > 63:
        raise ValueError(f"invalid label key {key!r}: name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        raise ValueError(
            f"invalid label key {key!r}: name part must consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _check_value(key: str, value: str) -> None:
    if len(value) > 63:
        raise ValueError(f"invalid value {value!r} for {key!r}: must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"invalid value {value!r} for {key!r}: a valid label value must be empty or consist "
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")


def parse_go_int64(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 10, 64); None on error."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


# --- the lexer and parser (k8s.io/apimachinery/pkg/labels) ----------------------------

_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = {
    "!": "NOT",
    "!=": "NE",
    "=": "EQ",
    "==": "EQEQ",
    "(": "LPAR",
    ")": "RPAR",
    ",": "COMMA",
    ">": "GT",
    "<": "LT",
}
_KEYWORDS = {"in": "IN", "notin": "NOTIN"}

OPERATORS = ("in", "notin", "=", "==", "!=", "exists", "!", "gt", "lt")


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append(("EOS", ""))
            return tokens
        ch = text[i]
        if ch in _SPECIAL:
            # longest symbol made of special characters
            j, last, last_end = i, None, i
            buf = ""
            while j < n and text[j] in _SPECIAL:
                buf += text[j]
                j += 1
                if buf in _SYMBOLS:
                    last, last_end = _SYMBOLS[buf], j
                elif last is not None:
                    break
            if last is None:
                raise ValueError(f"error expected: keyword found {buf!r}")
            tokens.append((last, text[i:last_end]))
            i = last_end
        else:
            j = i
            while j < n and text[j] not in _SPECIAL and text[j] not in _WHITESPACE:
                j += 1
            word = text[i:j]
            tokens.append((_KEYWORDS.get(word, "ID"), word))
            i = j


@dataclass(frozen=True)
class Requirement:
    source: str  # Cilium label source; "any" matches every source
    key: str
    op: str  # one of OPERATORS
    values: tuple[str, ...]


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self, values: bool = True) -> tuple[str, str]:
        tok, lit = self.tokens[self.pos]
        if values and tok in ("IN", "NOTIN"):
            tok = "ID"
        return tok, lit

    def _next(self, values: bool = True) -> tuple[str, str]:
        tok, lit = self._peek(values)
        self.pos += 1
        return tok, lit

    def parse(self) -> list[tuple[str, str, list[str]]]:
        reqs: list[tuple[str, str, list[str]]] = []
        while True:
            tok, lit = self._peek()
            if tok in ("ID", "NOT"):
                reqs.append(self._requirement())
                tok, lit = self._next()
                if tok == "EOS":
                    return reqs
                if tok == "COMMA":
                    tok2, lit2 = self._peek()
                    if tok2 not in ("ID", "NOT"):
                        raise ValueError(f"found {lit2!r}, expected: identifier after ','")
                    continue
                raise ValueError(f"found {lit!r}, expected: ',' or 'end of string'")
            if tok == "EOS":
                return reqs
            raise ValueError(f"found {lit!r}, expected: !, identifier, or 'end of string'")

    def _requirement(self) -> tuple[str, str, list[str]]:
        op = ""
        tok, lit = self._next()
        if tok == "NOT":
            op = "!"
            tok, lit = self._next()
        if tok != "ID":
            raise ValueError(f"found {lit!r}, expected: identifier")
        key = lit
        _check_key(key)
        nxt, _ = self._peek()
        if nxt in ("EOS", "COMMA"):
            return key, (op or "exists"), []
        if op == "!":
            # k8s: a '!key' followed by an operator is an operator error
            tok, lit = self._next(values=False)
            raise ValueError(f"found {lit!r}, expected: ',' or 'end of string'")
        tok, lit = self._next(values=False)
        ops = {
            "IN": "in",
            "NOTIN": "notin",
            "EQ": "=",
            "EQEQ": "==",
            "NE": "!=",
            "GT": "gt",
            "LT": "lt",
        }
        if tok not in ops:
            raise ValueError(f"found {lit!r}, expected: '=', '!=', '==', 'in', notin'")
        op = ops[tok]
        values = self._set_values() if op in ("in", "notin") else self._exact_value()
        return key, op, values

    def _set_values(self) -> list[str]:
        tok, lit = self._next()
        if tok != "LPAR":
            raise ValueError(f"found {lit!r} expected: '('")
        tok, lit = self._peek()
        if tok in ("ID", "COMMA"):
            values = self._identifiers()
            tok, lit = self._next()
            if tok != "RPAR":
                raise ValueError(f"found {lit!r}, expected: ')'")
            return values
        if tok == "RPAR":
            self._next()
            return [""]
        raise ValueError(f"found {lit!r}, expected: ',', ')' or identifier")

    def _identifiers(self) -> list[str]:
        values: list[str] = []
        while True:
            tok, lit = self._next()
            if tok == "ID":
                values.append(lit)
                tok2, lit2 = self._peek()
                if tok2 == "COMMA":
                    continue
                if tok2 == "RPAR":
                    return list(dict.fromkeys(values))
                raise ValueError(f"found {lit2!r}, expected: ',' or ')'")
            if tok == "COMMA":
                if not values:
                    values.append("")
                tok2, _ = self._peek()
                if tok2 == "RPAR":
                    values.append("")
                    return list(dict.fromkeys(values))
                if tok2 == "COMMA":
                    self._next()
                    values.append("")
                continue
            raise ValueError(f"found {lit!r}, expected: ',', or identifier")

    def _exact_value(self) -> list[str]:
        tok, lit = self._peek()
        if tok in ("EOS", "COMMA"):
            return [""]
        tok, lit = self._next()
        if tok == "ID":
            return [lit]
        raise ValueError(f"found {lit!r}, expected: identifier")


# Go's unicode.IsSpace (Unicode White_Space), used by Hubble's selector translation.
GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def translate_selector(selector: str) -> str:
    """Hubble's translateSelector: "k8s:foo in (a)" -> "k8s.foo in (a)"; bare keys
    get the "any" source ("foo" -> "any.foo")."""
    out: list[str] = []
    i, n = 0, len(selector)
    while i < n:
        # advance to the next key
        while i < n and (selector[i] in GO_SPACE or selector[i] == "!"):
            out.append(selector[i])
            i += 1
        # the key
        j = i
        while j < n and not (selector[j] in GO_SPACE or selector[j] in "=!,"):
            j += 1
        key = selector[i:j]
        if ":" not in key:
            key = "any:" + key
        out.append(key.replace(":", ".", 1))
        i = j
        # advance to the next selector
        nesting = 0
        while i < n:
            ch = selector[i]
            out.append(ch)
            i += 1
            if ch == "(":
                nesting += 1
            elif ch == ")":
                nesting -= 1
            if ch == "," and nesting == 0:
                break
    return "".join(out)


def _split_source(key: str) -> tuple[str, str]:
    """Cilium's parseSelectLabel with the '.' delimiter on a translated key."""
    if key.startswith("$"):
        return "reserved", key[1:]
    source, dot, rest = key.partition(".")
    if not dot:
        return "any", key
    return (source or "any"), rest


def parse_selector(selector: str) -> tuple[Requirement, ...]:
    """Parse one selector; raises ValueError with a readable message."""
    if "\0" in selector:
        raise ValueError("selector contains a NUL character")
    translated = translate_selector(selector)
    reqs = []
    for key, op, values in _Parser(_lex(translated)).parse():
        if op in ("in", "notin") and not values:
            raise ValueError("for 'in', 'notin' operators, values set can't be empty")
        if op in ("gt", "lt") and (len(values) != 1 or parse_go_int64(values[0]) is None):
            raise ValueError("for 'Gt', 'Lt' operators, the value must be an integer")
        for value in values:
            _check_value(key, value)
        source, name = _split_source(key)
        reqs.append(Requirement(source, name, op, tuple(values)))
    return tuple(reqs)


def _lookup(req: Requirement, labels: list[Label]) -> tuple[bool, str]:
    for label in labels:
        if label.key == req.key and (req.source == "any" or label.source == req.source):
            return True, label.value
    return False, ""


def requirement_matches(req: Requirement, labels: list[Label]) -> bool:
    has, value = _lookup(req, labels)
    op = req.op
    if op in ("in", "=", "=="):
        return has and value in req.values
    if op in ("notin", "!="):
        return not has or value not in req.values
    if op == "exists":
        return has
    if op == "!":
        return not has
    if not has:
        return False
    number = parse_go_int64(value)
    if number is None:
        return False
    threshold = int(req.values[0])
    return number > threshold if op == "gt" else number < threshold


def selector_matches(reqs: tuple[Requirement, ...], labels: list[Label]) -> bool:
    return all(requirement_matches(r, labels) for r in reqs)
