"""Strict validation of OCSF events against a released OCSF schema.

The released schemas ship in the ``pydantic-ocsf`` package (``ocsf/schemas/v1_*.json``:
each release's events, objects, dictionary and types as the OCSF repository defines
them). This module resolves a class or object the way OCSF compiles it: attributes
from the ``extends`` chain (base first, the most specific level wins), each merged
over the dictionary's definition (type, array-ness, enum, sibling), enums of all
levels merged, and attributes that profiles contribute through ``$include``.

The package ships the schema's own files but not the profile files ``$include``
names; ``PROFILE_ATTRIBUTES`` lists the attributes of the profiles Sensilla uses,
as the OCSF repository defines them (their types and enums still come from the
released dictionary). An ``$include`` not listed contributes nothing, so its
attributes are rejected: the check errs on the strict side.

``validate_event(record)`` returns every problem found (an empty list means valid):
unknown attributes anywhere (except inside ``unmapped`` and other free-form
``object`` / ``json_t`` values), missing required attributes, ``at_least_one`` and
``just_one`` constraints, value types (strings, integers, longs, booleans, floats,
timestamps, ports, IP addresses, UUIDs and the other typed strings with their
regular expressions, ranges and maximum lengths), enum values, sibling captions,
and the class's uids (``class_uid``, ``category_uid``, ``type_uid``).

``model_validate(record)`` additionally runs pydantic-ocsf's model of the class.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from importlib import resources
from typing import Any

DEFAULT_VERSION = "1.7.0"

# Attributes that profiles add through $include (as the OCSF repository defines the
# profiles; the released dictionary gives their types and enums). Value: attribute
# -> overrides of its dictionary definition.
PROFILE_ATTRIBUTES: dict[str, dict[str, dict[str, Any]]] = {
    "profiles/security_control.json": {
        "action": {"requirement": "optional"},
        "action_id": {
            "requirement": "recommended",
            # the profile narrows the dictionary's enum: 99 'Other' is not an option
            "enum_only": {"0": "Unknown", "1": "Allowed", "2": "Denied"},
        },
        "attacks": {"requirement": "optional"},
        "authorizations": {"requirement": "optional"},
        "confidence": {"requirement": "optional"},
        "confidence_id": {"requirement": "recommended"},
        "confidence_score": {"requirement": "optional"},
        "disposition": {"requirement": "optional"},
        "disposition_id": {"requirement": "recommended"},
        "firewall_rule": {"requirement": "optional"},
        "is_alert": {"requirement": "recommended"},
        "malware": {"requirement": "optional"},
        "policy": {"requirement": "optional"},
        "risk_details": {"requirement": "optional"},
        "risk_level": {"requirement": "optional"},
        "risk_level_id": {"requirement": "optional"},
        "risk_score": {"requirement": "optional"},
    },
    "profiles/container.json": {
        "container": {"requirement": "recommended"},
        "namespace_pid": {"requirement": "recommended"},
    },
}

_CLASS_UIDS = frozenset({"class_uid", "category_uid", "type_uid"})
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class SchemaNotFound(LookupError):
    pass


@functools.lru_cache(maxsize=4)
def load_schema(version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """The released schema of an OCSF version, as pydantic-ocsf ships it."""
    name = f"v{version.replace('.', '_')}.json"
    try:
        text = resources.files("ocsf").joinpath("schemas", name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SchemaNotFound(
            f"OCSF schema {version} not found (is pydantic-ocsf installed?)"
        ) from exc
    data: dict[str, Any] = json.loads(text)
    if data.get("version") != version:
        raise SchemaNotFound(f"{name} holds OCSF {data.get('version')}, not {version}")
    return data


class OcsfSchema:
    """One released OCSF schema, resolved on demand."""

    def __init__(self, version: str = DEFAULT_VERSION) -> None:
        self.version = version
        self.raw = load_schema(version)
        self.events: dict[str, Any] = self.raw["events"]
        self.objects: dict[str, Any] = self.raw["objects"]
        self.dictionary: dict[str, Any] = self.raw["dictionary"]["attributes"]
        self.types: dict[str, Any] = self.raw["dictionary"]["types"]["attributes"]
        self.categories: dict[str, Any] = self.raw["categories_meta"]["attributes"]
        self._resolved: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    # --- resolution ------------------------------------------------------------------

    def _chain(self, table: dict[str, Any], name: str) -> list[dict[str, Any]]:
        out = []
        spec = table.get(name)
        if spec is None:
            raise SchemaNotFound(f"{name!r} is not in OCSF {self.version}")
        seen = set()
        while spec is not None:
            out.append(spec)
            parent = spec.get("extends")
            if not parent or parent in seen:
                break
            seen.add(parent)
            spec = table.get(parent) or self.objects.get(parent) or self.events.get(parent)
        out.reverse()  # base first
        return out

    def attributes(self, kind: str, name: str) -> dict[str, dict[str, Any]]:
        """Resolved attribute specs of an event class (kind "event") or object."""
        key = (kind, name)
        if key in self._resolved:
            return self._resolved[key]
        table = self.events if kind == "event" else self.objects
        merged: dict[str, dict[str, Any]] = {}

        def put(attr: str, spec: dict[str, Any]) -> None:
            base = merged.get(attr) or dict(self.dictionary.get(attr, {}))
            enum = dict(base.get("enum") or {})
            new = {**base, **{k: v for k, v in spec.items() if k != "enum"}}
            if spec.get("enum"):
                enum.update(spec["enum"])
            if enum:
                new["enum"] = enum
            if "enum_only" in spec:
                new["enum"] = {k: {"caption": v} for k, v in spec["enum_only"].items()}
            merged[attr] = new

        for level in self._chain(table, name):
            attrs = level.get("attributes", {})
            for inc in attrs.get("$include", []) or []:
                for attr, spec in PROFILE_ATTRIBUTES.get(inc, {}).items():
                    put(attr, spec)
            for attr, spec in attrs.items():
                if attr.startswith("$") or not isinstance(spec, dict):
                    continue
                put(attr, spec)
        self._resolved[key] = merged
        return merged

    def constraints(self, kind: str, name: str) -> dict[str, list[str]]:
        table = self.events if kind == "event" else self.objects
        out: dict[str, list[str]] = {}
        for level in self._chain(table, name):
            out.update(level.get("constraints") or {})
        return out

    def class_uid(self, name: str) -> tuple[int, int]:
        """(category_uid, class_uid) of an event class."""
        spec = self.events[name]
        cat = spec.get("category")
        chain = self._chain(self.events, name)
        for level in reversed(chain):
            cat = cat or level.get("category")
        category_uid = int(self.categories[cat]["uid"])
        return category_uid, category_uid * 1000 + int(spec["uid"])

    # --- validation ------------------------------------------------------------------

    def validate_event(self, record: Any, class_name: str = "network_activity") -> list[str]:
        errors: list[str] = []
        if not isinstance(record, dict):
            return ["the event is not a JSON object"]
        category_uid, class_uid = self.class_uid(class_name)
        if record.get("class_uid") != class_uid:
            errors.append(f"class_uid: {record.get('class_uid')!r}, expected {class_uid}")
        if record.get("category_uid") != category_uid:
            errors.append(f"category_uid: {record.get('category_uid')!r}, expected {category_uid}")
        act = record.get("activity_id")
        if isinstance(act, int) and record.get("type_uid") != class_uid * 100 + act:
            errors.append(f"type_uid: {record.get('type_uid')!r}, expected {class_uid * 100 + act}")
        meta = record.get("metadata")
        if isinstance(meta, dict) and meta.get("version") != self.version:
            errors.append(f"metadata.version: {meta.get('version')!r}, expected {self.version}")
        self._check_object(record, "event", class_name, "", errors)
        return errors

    def _check_object(
        self, value: dict[str, Any], kind: str, name: str, path: str, errors: list[str]
    ) -> None:
        attrs = self.attributes(kind, name)
        for attr, spec in attrs.items():
            if spec.get("requirement") == "required" and attr not in value:
                errors.append(f"{path}{attr}: required by {name} but missing")
        for rule, names in self.constraints(kind, name).items():
            present = [n for n in names if value.get(n) is not None]
            if rule == "at_least_one" and not present:
                errors.append(f"{path[:-1] or name}: needs at least one of {', '.join(names)}")
            elif rule == "just_one" and len(present) != 1:
                errors.append(f"{path[:-1] or name}: needs exactly one of {', '.join(names)}")
        for attr, v in value.items():
            where = f"{path}{attr}"
            found = attrs.get(attr)
            if found is None:
                errors.append(f"{where}: not an attribute of {name} in OCSF {self.version}")
                continue
            spec = found
            if v is None:
                errors.append(f"{where}: null (leave the attribute out instead)")
                continue
            if spec.get("is_array"):
                if not isinstance(v, list):
                    errors.append(f"{where}: must be an array")
                    continue
                for i, item in enumerate(v):
                    self._check_value(item, attr, spec, f"{where}[{i}]", errors)
            else:
                self._check_value(v, attr, spec, where, errors)
            sibling = spec.get("sibling")
            if sibling and sibling in value and "enum" in spec and isinstance(v, int):
                caption = spec["enum"].get(str(v), {}).get("caption")
                if v != 99 and caption is not None and value[sibling] != caption:
                    errors.append(
                        f"{path}{sibling}: {value[sibling]!r} is not the caption of "
                        f"{attr} {v} ({caption!r})"
                    )

    def _check_value(
        self, v: Any, attr: str, spec: dict[str, Any], where: str, errors: list[str]
    ) -> None:
        t = spec.get("object_type") or spec.get("type") or "string_t"
        if t in self.objects:
            if not isinstance(v, dict):
                errors.append(f"{where}: must be a {t} object")
            elif t != "object":
                self._check_object(v, "object", t, f"{where}.", errors)
            return
        self._check_scalar(v, t, where, errors)
        # the uids are checked against the class itself (validate_event); the raw
        # schema's enums of them only hold the placeholder 0
        if attr in _CLASS_UIDS:
            return
        if "enum" in spec and str(v) not in spec["enum"]:
            errors.append(f"{where}: {v!r} is not one of {attr}'s values {sorted(spec['enum'])}")

    def _check_scalar(self, v: Any, t: str, where: str, errors: list[str]) -> None:
        tdef = self.types.get(t)
        if tdef is None:
            errors.append(f"{where}: unknown type {t}")
            return
        base = t
        while base in self.types and self.types[base].get("type"):
            base = self.types[base]["type"]
        ok = True
        if base == "string_t":
            ok = isinstance(v, str)
        elif base in ("integer_t", "long_t"):
            lo, hi = _INT32 if base == "integer_t" else _INT64
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif base == "float_t":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif base == "boolean_t":
            ok = isinstance(v, bool)
        elif base == "json_t":
            ok = True
        if not ok:
            errors.append(f"{where}: {v!r} is not a valid {t}")
            return
        if "range" in tdef and not tdef["range"][0] <= v <= tdef["range"][1]:
            errors.append(f"{where}: {v!r} outside {t}'s range {tdef['range']}")
        if "max_len" in tdef and isinstance(v, str) and len(v) > int(tdef["max_len"]):
            errors.append(f"{where}: longer than {tdef['max_len']} characters")
        if "regex" in tdef and isinstance(v, str) and not _regex(tdef["regex"]).search(v):
            errors.append(f"{where}: {v!r} does not match {t}")
        if t == "ip_t" and isinstance(v, str):
            try:
                ipaddress.ip_address(v)
            except ValueError:
                errors.append(f"{where}: {v!r} is not an IP address")


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@functools.lru_cache(maxsize=4)
def schema(version: str = DEFAULT_VERSION) -> OcsfSchema:
    return OcsfSchema(version)


def validate_event(
    record: Any, class_name: str = "network_activity", version: str = DEFAULT_VERSION
) -> list[str]:
    """Problems of an OCSF event against the released schema (empty: valid)."""
    return schema(version).validate_event(record, class_name)


def model_validate(record: dict[str, Any], version: str = DEFAULT_VERSION) -> Any:
    """Validate with pydantic-ocsf's model of Network Activity (raises on error)."""
    import copy
    import importlib

    module = importlib.import_module(f"ocsf.v{version.replace('.', '_')}.events")
    # the models fill in sibling captions in the input: validate a copy
    return module.NetworkActivity.model_validate(copy.deepcopy(record))
