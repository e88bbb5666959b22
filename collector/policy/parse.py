"""Parse NetworkPolicy documents (YAML or JSON, several per file, `kind: List`) and
validate them exactly as the API server does, with errors naming field paths.

    >>> docs = parse_documents(text, source="policy.yaml")      # raises PolicyValidationError
    >>> [d.policy.key for d in docs]

Checks (pkg/apis/networking/validation): metadata name (DNS subdomain) and namespace
(DNS label); label selectors (keys, values, operators and their values); ipBlock
`cidr` and each `except` (valid CIDRs, every except a strict subset of cidr, same
family); peers (at least one selector or ipBlock, ipBlock alone); ports (protocol
TCP/UDP/SCTP, number 1-65535 or IANA service name, `endPort` only with a numeric
port and not below it); policyTypes (Ingress/Egress, at most two). Like
`kubectl apply` (strict field validation), unknown and duplicate fields are errors.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from collector.policy import names
from collector.policy.errors import ErrorList, FieldError, PolicyValidationError
from collector.policy.model import (
    EGRESS,
    INGRESS,
    POLICY_TYPES,
    PROTOCOLS,
    TCP,
    IPBlock,
    IPNetwork,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
    default_policy_types,
)
from collector.policy.selectors import LabelSelector, check_fields, parse_selector, validate_labels

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
LIST_KINDS = ("List", "NetworkPolicyList")
_META_FIELDS = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
)
_CIDR_RE = re.compile(r"^[0-9A-Fa-f:.]+/(0|[1-9][0-9]{0,2})$")
_CIDR_HINT = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


@dataclass(frozen=True)
class ParsedPolicy:
    """A validated policy: the model and the object as given (namespace filled in)."""

    policy: NetworkPolicy
    obj: dict[str, Any]
    source: str


# --- loading documents ---------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (the API server's strict decoding does)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate field {key!r}",
                key_node.start_mark,
            )
        try:
            seen.add(key)
        except TypeError:
            pass
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate field {k!r}")
        out[k] = v
    return out


# YAML aliases let a few kilobytes stand for a document of gigabytes ("billion
# laughs"): a document whose values, aliases expanded, number more than this and more
# than ALIAS_RATIO times its distinct values is refused (go-yaml, which the API server
# and kubectl use, refuses excessive aliasing too).
MAX_EXPANDED_VALUES = 100_000
ALIAS_RATIO = 10


def _expanded_size(obj: Any) -> tuple[int, int]:
    """(values with aliases expanded, distinct values) of a decoded YAML document;
    linear in the distinct values (shared subtrees are sized once)."""
    sizes: dict[int, int] = {}
    distinct = 0

    def size(o: Any) -> int:
        nonlocal distinct
        if not isinstance(o, dict | list):
            return 1
        known = sizes.get(id(o))
        if known is not None:
            return known
        sizes[id(o)] = 1  # a self-referencing alias counts once
        distinct += 1
        children = o.items() if isinstance(o, dict) else enumerate(o)
        total = 1 + sum(size(v) + 1 for _, v in children)
        sizes[id(o)] = total
        return total

    return size(obj), distinct + 1


def _check_aliasing(obj: Any, source: str, index: int) -> None:
    expanded, distinct = _expanded_size(obj)
    if expanded > MAX_EXPANDED_VALUES and expanded > ALIAS_RATIO * distinct:
        raise PolicyValidationError(
            [
                FieldError(
                    "",
                    "Malformed document",
                    f"invalid YAML: document {index} expands to {expanded} values through "
                    f"aliases (at most {MAX_EXPANDED_VALUES}, or {ALIAS_RATIO} times its own)",
                )
            ],
            source,
        )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem).replace("\n", " ")


def load_documents(text: str, source: str = "<input>") -> list[tuple[str, Any]]:
    """Split YAML or JSON text into (label, object) pairs; `kind: List` is expanded
    into its items. Raises PolicyValidationError when the text does not parse."""
    stripped = text.lstrip()
    raw: list[Any] = []
    if stripped.startswith(("{", "[")):
        decoder = json.JSONDecoder(object_pairs_hook=_no_duplicate_pairs)
        pos = 0
        try:
            while True:
                while pos < len(text) and text[pos].isspace():
                    pos += 1
                if pos >= len(text):
                    break
                obj, pos = decoder.raw_decode(text, pos)
                raw.append(obj)
        except ValueError as exc:
            raise PolicyValidationError(
                [FieldError("", "Malformed document", f"invalid JSON: {exc}")], source
            ) from None
    else:
        try:
            raw = list(yaml.load_all(text, Loader=_StrictLoader))
        except yaml.YAMLError as exc:
            raise PolicyValidationError(
                [FieldError("", "Malformed document", f"invalid YAML: {_yaml_problem(exc)}")],
                source,
            ) from None
        for i, obj in enumerate(raw, start=1):
            _check_aliasing(obj, source, i)
    out: list[tuple[str, Any]] = []
    for i, obj in enumerate(raw, start=1):
        if obj is None:
            continue  # an empty document ("---" at the end)
        label = f"{source} document {i}"
        if isinstance(obj, Mapping) and obj.get("kind") in LIST_KINDS:
            items = obj.get("items")
            if not isinstance(items, list):
                raise PolicyValidationError(
                    [FieldError("items", "Required value", "a List needs a list of items")], label
                )
            out.extend((f"{label} items[{j}]", item) for j, item in enumerate(items))
        elif isinstance(obj, list):
            out.extend((f"{label}[{j}]", item) for j, item in enumerate(obj))
        else:
            out.append((label, obj))
    return out


def parse_documents(
    text: str, source: str = "<input>", default_namespace: str = "default"
) -> list[ParsedPolicy]:
    """Parse and validate every document; raise one PolicyValidationError listing the
    errors of every invalid document (nothing is returned when any is invalid)."""
    docs = load_documents(text, source)
    parsed: list[ParsedPolicy] = []
    failures: list[PolicyValidationError] = []
    for label, obj in docs:
        try:
            parsed.append(parse_object(obj, label, default_namespace))
        except PolicyValidationError as exc:
            failures.append(exc)
    if failures:
        raise PolicyValidationError.merge(failures)
    if not parsed:
        raise PolicyValidationError(
            [FieldError("", "Required value", "no NetworkPolicy document found")], source
        )
    return parsed


def parse_object(obj: Any, label: str = "", default_namespace: str | None = None) -> ParsedPolicy:
    """Validate one NetworkPolicy object (a dict as decoded from JSON/YAML)."""
    errs = ErrorList()
    if not isinstance(obj, Mapping):
        errs.wrong_type("", obj, "an object (a Kubernetes NetworkPolicy)")
        raise PolicyValidationError(errs, label)
    check_fields(obj, ("apiVersion", "kind", "metadata", "spec", "status"), "", errs)
    kind = obj.get("kind")
    api = obj.get("apiVersion")
    if kind is None:
        errs.required("kind")
    elif kind != KIND:
        errs.unsupported("kind", kind, (KIND, *LIST_KINDS))
    if api is None:
        errs.required("apiVersion")
    elif api != API_VERSION:
        errs.unsupported("apiVersion", api, (API_VERSION,))
    if errs:
        raise PolicyValidationError(errs, label)

    meta = obj.get("metadata")
    name, namespace = "", default_namespace or ""
    if not isinstance(meta, Mapping):
        if meta is None:
            errs.required("metadata.name", "name or generateName is required")
        else:
            errs.wrong_type("metadata", meta, "an object")
        meta = {}
    else:
        check_fields(meta, _META_FIELDS, "metadata", errs)
        raw_name = meta.get("name")
        if raw_name is None or raw_name == "":
            errs.required("metadata.name", "name or generateName is required")
        elif not isinstance(raw_name, str):
            errs.wrong_type("metadata.name", raw_name, "a string")
        else:
            name = raw_name
            for msg in names.dns1123_subdomain(name):
                errs.invalid("metadata.name", name, msg)
        raw_ns = meta.get("namespace")
        if raw_ns is not None and raw_ns != "":
            if not isinstance(raw_ns, str):
                errs.wrong_type("metadata.namespace", raw_ns, "a string")
            else:
                namespace = raw_ns
        if not namespace:
            errs.required("metadata.namespace")
        else:
            for msg in names.dns1123_label(namespace):
                errs.invalid("metadata.namespace", namespace, msg)
        validate_labels(meta.get("labels"), "metadata.labels", errs)
        ann = meta.get("annotations")
        if ann is not None and (
            not isinstance(ann, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items())
        ):
            errs.wrong_type("metadata.annotations", ann, "an object of strings")

    spec_obj = obj.get("spec")
    if spec_obj is None:
        spec_obj = {}
    if not isinstance(spec_obj, Mapping):
        errs.wrong_type("spec", spec_obj, "an object")
        raise PolicyValidationError(errs, label)
    policy = _parse_spec(spec_obj, namespace, name, errs)
    if errs:
        who = f" ({namespace}/{name})" if name and namespace else ""
        raise PolicyValidationError(errs, label + who)
    assert policy is not None
    rv = meta.get("resourceVersion")
    if isinstance(rv, str | int):
        policy = _with_rv(policy, str(rv))
    clean = dict(obj)
    clean_meta = dict(meta)
    clean_meta["namespace"] = namespace
    clean["metadata"] = clean_meta
    return ParsedPolicy(policy, clean, f"{label} ({namespace}/{name})")


def _with_rv(p: NetworkPolicy, rv: str) -> NetworkPolicy:
    from dataclasses import replace

    return replace(p, resource_version=rv)


# --- the spec ------------------------------------------------------------------------


def _parse_spec(
    spec: Mapping[str, Any], namespace: str, name: str, errs: ErrorList
) -> NetworkPolicy | None:
    check_fields(spec, ("podSelector", "policyTypes", "ingress", "egress"), "spec", errs)
    pod_selector = parse_selector(spec.get("podSelector"), "spec.podSelector", errs)
    ingress = _parse_rules(spec.get("ingress"), "spec.ingress", "from", errs)
    egress = _parse_rules(spec.get("egress"), "spec.egress", "to", errs)
    types: list[str] = []
    raw_types = spec.get("policyTypes")
    if raw_types is not None:
        if not isinstance(raw_types, list):
            errs.wrong_type("spec.policyTypes", raw_types, "a list")
        elif len(raw_types) > len(POLICY_TYPES):
            errs.invalid("spec.policyTypes", raw_types, "may not specify more than two policyTypes")
        else:
            for i, t in enumerate(raw_types):
                if t not in POLICY_TYPES:
                    errs.unsupported(f"spec.policyTypes[{i}]", t, POLICY_TYPES)
                elif t not in types:
                    types.append(t)
    if errs:
        return None
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=pod_selector,
        policy_types=default_policy_types(types, len(egress)),
        ingress=tuple(ingress),
        egress=tuple(egress),
    )


def _parse_rules(raw: Any, path: str, peers_field: str, errs: ErrorList) -> list[Rule]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errs.wrong_type(path, raw, "a list of rules")
        return []
    rules = []
    for i, rule in enumerate(raw):
        rpath = f"{path}[{i}]"
        if rule is None:
            rule = {}
        if not isinstance(rule, Mapping):
            errs.wrong_type(rpath, rule, "an object (a rule)")
            continue
        check_fields(rule, (peers_field, "ports"), rpath, errs)
        ports = _parse_list(rule.get("ports"), f"{rpath}.ports", errs, _parse_port)
        peers = _parse_list(rule.get(peers_field), f"{rpath}.{peers_field}", errs, _parse_peer)
        rules.append(Rule(tuple(peers), tuple(ports)))
    return rules


def _parse_list(raw: Any, path: str, errs: ErrorList, fn: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errs.wrong_type(path, raw, "a list")
        return []
    out = []
    for i, item in enumerate(raw):
        value = fn(item, f"{path}[{i}]", errs)
        if value is not None:
            out.append(value)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_port(raw: Any, path: str, errs: ErrorList) -> PortSpec | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errs.wrong_type(path, raw, "an object (a port)")
        return None
    check_fields(raw, ("protocol", "port", "endPort"), path, errs)
    n = len(errs)
    protocol = raw.get("protocol")
    if protocol is None:
        protocol = TCP
    elif protocol not in PROTOCOLS:
        errs.unsupported(f"{path}.protocol", protocol, PROTOCOLS)
    port = raw.get("port")
    end_port = raw.get("endPort")
    if end_port is not None and not _is_int(end_port):
        errs.wrong_type(f"{path}.endPort", end_port, "an integer")
        end_port = None
    if port is not None:
        if _is_int(port):
            for msg in names.port_number(port):
                errs.invalid(f"{path}.port", port, msg)
            if end_port is not None:
                if end_port < port:
                    errs.invalid(
                        f"{path}.endPort", end_port, "must be greater than or equal to `port`"
                    )
                for msg in names.port_number(end_port):
                    errs.invalid(f"{path}.endPort", end_port, msg)
        elif isinstance(port, str):
            if end_port is not None:
                errs.invalid(
                    f"{path}.endPort", end_port, "may not be specified when `port` is non-numeric"
                )
            for msg in names.port_name(port):
                errs.invalid(f"{path}.port", port, msg)
        else:
            errs.wrong_type(f"{path}.port", port, "a port number or a port name")
    elif end_port is not None:
        errs.invalid(
            f"{path}.endPort", end_port, "may not be specified when `port` is not specified"
        )
    if len(errs) > n:
        return None
    return PortSpec(protocol=str(protocol), port=port, end_port=end_port)


def _parse_peer(raw: Any, path: str, errs: ErrorList) -> Peer | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errs.wrong_type(path, raw, "an object (a peer)")
        return None
    check_fields(raw, ("podSelector", "namespaceSelector", "ipBlock"), path, errs)
    n = len(errs)
    count = 0
    pod_sel: LabelSelector | None = None
    ns_sel: LabelSelector | None = None
    block: IPBlock | None = None
    if raw.get("podSelector") is not None:
        count += 1
        pod_sel = parse_selector(raw["podSelector"], f"{path}.podSelector", errs)
    if raw.get("namespaceSelector") is not None:
        count += 1
        ns_sel = parse_selector(raw["namespaceSelector"], f"{path}.namespaceSelector", errs)
    if raw.get("ipBlock") is not None:
        count += 1
        block = _parse_ip_block(raw["ipBlock"], f"{path}.ipBlock", errs)
    if count == 0:
        errs.required(path, "must specify a peer")
    elif count > 1 and raw.get("ipBlock") is not None:
        errs.forbidden(path, "may not specify both ipBlock and another peer")
    if len(errs) > n:
        return None
    return Peer(pod_sel, ns_sel, block)


def parse_cidr(text: Any) -> tuple[IPNetwork | None, str]:
    """Parse a CIDR as Go's net.ParseCIDR does (host bits allowed and masked off).
    Returns (network, "") or (None, problem)."""
    if not isinstance(text, str):
        return None, "must be a string"
    if not _CIDR_RE.match(text):
        return None, _CIDR_HINT
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None, _CIDR_HINT
    mapped = isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped
    if mapped and net.prefixlen >= 96:
        return None, "must not be an IPv4-mapped IPv6 address"
    return net, ""


def _parse_ip_block(raw: Any, path: str, errs: ErrorList) -> IPBlock | None:
    if not isinstance(raw, Mapping):
        errs.wrong_type(path, raw, "an object (an ipBlock)")
        return None
    check_fields(raw, ("cidr", "except"), path, errs)
    cidr_text = raw.get("cidr")
    if cidr_text is None or cidr_text == "":
        errs.required(f"{path}.cidr")
        return None
    cidr, problem = parse_cidr(cidr_text)
    if cidr is None:
        errs.invalid(f"{path}.cidr", cidr_text, problem)
        return None
    excepts: list[IPNetwork] = []
    raw_except = raw.get("except")
    if raw_except is not None and not isinstance(raw_except, list):
        errs.wrong_type(f"{path}.except", raw_except, "a list of CIDRs")
        return None
    ok = True
    for i, text in enumerate(raw_except or []):
        epath = f"{path}.except[{i}]"
        exc, problem = parse_cidr(text)
        if exc is None:
            errs.invalid(epath, text, problem)
            ok = False
            continue
        if (
            exc.version != cidr.version
            or exc.network_address not in cidr
            or exc.prefixlen <= cidr.prefixlen
        ):
            errs.invalid(epath, text, "must be a strict subset of `cidr`")
            ok = False
            continue
        excepts.append(exc)
    if not ok:
        return None
    return IPBlock(cidr, tuple(excepts))


def policy_from_object(obj: Mapping[str, Any]) -> NetworkPolicy:
    """A stored object (state directory, API server) back into the model."""
    return parse_object(obj).policy


__all__ = [
    "EGRESS",
    "INGRESS",
    "ParsedPolicy",
    "load_documents",
    "parse_cidr",
    "parse_documents",
    "parse_object",
    "policy_from_object",
]
