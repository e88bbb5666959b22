"""Hubble's ``[namespace/][name-prefix]`` values (pod and service filters)."""

from __future__ import annotations

from sensilla.filters.errors import FilterError


def parse_namespaced_name(value: str) -> tuple[str, str]:
    """Hubble's k8s.ParseNamespaceName: "ns/name" -> (ns, name); "name" ->
    ("default", name); "" -> ("", ""). Only the first two "/"-separated parts count."""
    parts = value.split("/")
    if len(parts) > 1:
        return parts[0], parts[1]
    if parts[0] == "":
        return "", ""
    return "default", parts[0]


def parse_values(values: list[str], field: str, path: str) -> list[tuple[str, str]]:
    out = []
    for i, value in enumerate(values):
        ns, prefix = parse_namespaced_name(value)
        if ns == "" and prefix == "":
            raise FilterError(
                f"{path}.{field}[{i}]",
                f"invalid filter, must be [namespace/][<name>], got {value!r}",
            )
        out.append((ns, prefix))
    return list(dict.fromkeys(out))
