"""The relay's exporter configuration (``sensilla relay --exporter-config FILE``),
YAML or JSON:

    state_dir: /var/lib/sensilla/exporters   # positions and file-sink state
    exporters:
      - name: all-flows                      # unique; names its state file
        type: file                           # file | syslog | stdout
        format: json                         # json (Hubble's exporter lines) | ocsf
        include_filters: [{verdict: [DROPPED]}]   # Hubble FlowFilters (allowlist)
        exclude_filters: [{source_pod: [kube-system/]}]   # (denylist)
        field_mask: [time, source, destination, verdict]
        namespaces: [x, y]                   # scope: only flows from or to these
        batch_size: 1000                     # records per write / syslog batch
        file: {path: /var/log/sensilla/flows.log, max_size_mb: 10, max_backups: 5,
               fsync: true}
      - name: siem
        type: syslog
        format: ocsf
        syslog: {address: siem.example:6514, tls: {ca_file: /etc/ssl/siem-ca.pem},
                 app_name: sensilla, hostname: "", facility: local0}

Filters are Hubble's ``flow.FlowFilter`` in protobuf JSON (field names as in
flow.proto: ``source_pod``, ``verdict``, ``destination_port`` …). Hubble's own
exporter names are accepted too (``allowlist``/``denylist``,
``includeFilters``/``excludeFilters``, ``fieldMask``, ``filePath``,
``fileMaxSizeMb``, ``fileMaxBackups``). Every error names the exporter and field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2, json_format

from relay.siem.sinks import TlsOptions
from sensilla.filters import CompiledFilter, FilterError, compile_request_filters
from sensilla.protos import flow_pb2

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TYPES = ("file", "syslog", "stdout")
FORMATS = ("json", "ocsf")
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip
DEFAULT_STATE_DIR = "/var/lib/sensilla/exporters"

_ALIASES = {
    "allowlist": "include_filters",
    "includeFilters": "include_filters",
    "denylist": "exclude_filters",
    "excludeFilters": "exclude_filters",
    "fieldMask": "field_mask",
    "filePath": "file.path",
    "fileMaxSizeMb": "file.max_size_mb",
    "fileMaxBackups": "file.max_backups",
}
_TOP = {"name", "type", "format", "include_filters", "exclude_filters", "field_mask",
        "batch_size", "poll_interval_s", "file", "syslog", "namespaces"}  # fmt: skip
_FILE = {"path", "max_size_mb", "max_size_bytes", "max_backups", "fsync"}
_SYSLOG = {"address", "tls", "app_name", "hostname", "facility", "msgid", "sd_id",
           "connect_timeout_s", "confirm_timeout_s"}  # fmt: skip
_TLS = {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"}


class ConfigError(ValueError):
    """The exporter configuration is invalid; the message names the field."""


@dataclass
class FileOptions:
    path: str
    max_size: int = 10 << 20
    max_backups: int = 0  # 0: keep every rotated file
    fsync: bool = True


@dataclass
class SyslogOptions:
    address: str
    tls: TlsOptions | None = None
    app_name: str = "sensilla"
    hostname: str = ""  # "": the flow's node name
    facility: int = 16
    msgid: str = ""  # "": "flow" (json) or "ocsf"
    sd_id: str = "flow@32473"
    connect_timeout_s: float = 10.0
    confirm_timeout_s: float = 30.0


@dataclass
class ExporterConfig:
    name: str
    type: str
    format: str = "json"
    include_filters: list[flow_pb2.FlowFilter] = field(default_factory=list)
    exclude_filters: list[flow_pb2.FlowFilter] = field(default_factory=list)
    field_mask: list[str] = field(default_factory=list)
    batch_size: int = 1000
    poll_interval_s: float = 1.0
    file: FileOptions | None = None
    syslog: SyslogOptions | None = None
    compiled: CompiledFilter | None = None
    # a namespace scope (sensilla.security.scope.Scope) when ``namespaces`` is set:
    # only flows whose source or destination namespace is listed, as a scoped token
    scope: Any = None

    @property
    def mask(self) -> field_mask_pb2.FieldMask | None:
        return field_mask_pb2.FieldMask(paths=self.field_mask) if self.field_mask else None


@dataclass
class ExportersConfig:
    state_dir: str = DEFAULT_STATE_DIR
    exporters: list[ExporterConfig] = field(default_factory=list)
    source: str = ""


def _unalias(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        target = _ALIASES.get(key, key)
        if "." in target:
            section, sub = target.split(".", 1)
            out.setdefault(section, {})
            if not isinstance(out[section], dict):
                raise ConfigError(f"{where}.{section}: must be a mapping")
            out[section][sub] = value
        else:
            if target in out and isinstance(out[target], dict) and isinstance(value, dict):
                out[target] = {**value, **out[target]}
            else:
                out[target] = value
    return out


def _check_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _number(
    raw: dict[str, Any], key: str, where: str, default: float, lo: float, hi: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: must be a number within [{lo}, {hi}]")
    return float(value)


def _bool(raw: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false")
    return value


def _text(raw: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string")
    return value


def _filters(raw: Any, where: str) -> list[flow_pb2.FlowFilter]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be a list of FlowFilters")
    out = []
    for i, item in enumerate(raw):
        ff = flow_pb2.FlowFilter()
        try:
            json_format.ParseDict(item, ff)
        except json_format.ParseError as exc:
            raise ConfigError(f"{where}[{i}]: {exc}") from None
        out.append(ff)
    return out


def _mask(raw: Any, where: str) -> list[str]:
    from sensilla.filters.fieldmask import valid_flow_path

    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"{where}: must be a list of flow field paths")
    for i, p in enumerate(raw):
        if not valid_flow_path(p):
            raise ConfigError(f"{where}[{i}]: unknown flow field path {p!r}")
    return list(raw)


def _tls(raw: Any, where: str) -> TlsOptions | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return TlsOptions()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be true, false or a mapping")
    _check_keys(raw, _TLS, where)
    for key in ("ca_file", "cert_file", "key_file"):
        if key in raw and not Path(_text(raw, key, where)).is_file():
            raise ConfigError(f"{where}.{key}: no such file {raw[key]!r}")
    return TlsOptions(
        ca_file=raw.get("ca_file"),
        cert_file=raw.get("cert_file"),
        key_file=raw.get("key_file"),
        server_name=raw.get("server_name"),
        insecure_skip_verify=_bool(raw, "insecure_skip_verify", where, False),
    )


def parse_exporter(raw: Any, where: str) -> ExporterConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    raw = _unalias(raw, where)
    _check_keys(raw, _TOP, where)
    name = _text(raw, "name", where)
    if not NAME.match(name):
        raise ConfigError(f"{where}.name: 1..64 letters, digits, '_', '.', '-' (got {name!r})")
    where = f"{where} ({name})"
    kind = _text(raw, "type", where, "file" if "file" in raw else "")
    if kind not in TYPES:
        raise ConfigError(f"{where}.type: one of {', '.join(TYPES)}")
    fmt = _text(raw, "format", where, "json")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}.format: one of {', '.join(FORMATS)}")
    cfg = ExporterConfig(
        name=name,
        type=kind,
        format=fmt,
        include_filters=_filters(raw.get("include_filters"), f"{where}.include_filters"),
        exclude_filters=_filters(raw.get("exclude_filters"), f"{where}.exclude_filters"),
        field_mask=_mask(raw.get("field_mask"), f"{where}.field_mask"),
        batch_size=int(_number(raw, "batch_size", where, 1000, 1, 100_000)),
        poll_interval_s=_number(raw, "poll_interval_s", where, 1.0, 0.01, 60),
    )
    if "namespaces" in raw:
        ns = raw["namespaces"]
        if not isinstance(ns, list) or not ns or not all(isinstance(n, str) and n for n in ns):
            raise ConfigError(f"{where}.namespaces: a non-empty list of namespace names")
        from sensilla.security.scope import Scope

        cfg.scope = Scope(f"exporter {name}", namespaces=frozenset(ns))
    try:
        cfg.compiled = compile_request_filters(cfg.include_filters, cfg.exclude_filters)
    except FilterError as exc:
        raise ConfigError(
            f"{where}: {exc}".replace("whitelist", "include_filters").replace(
                "blacklist", "exclude_filters"
            )
        ) from None
    if kind == "file":
        f = raw.get("file")
        if not isinstance(f, dict):
            raise ConfigError(f"{where}.file: a mapping with at least path")
        _check_keys(f, _FILE, f"{where}.file")
        path = _text(f, "path", f"{where}.file")
        if not path:
            raise ConfigError(f"{where}.file.path: required")
        if "max_size_bytes" in f:
            size = int(_number(f, "max_size_bytes", f"{where}.file", 0, 1024, 1 << 40))
        else:
            size = int(_number(f, "max_size_mb", f"{where}.file", 10, 0.001, 1 << 20) * (1 << 20))
        cfg.file = FileOptions(
            path=path,
            max_size=size,
            max_backups=int(_number(f, "max_backups", f"{where}.file", 0, 0, 100_000)),
            fsync=_bool(f, "fsync", f"{where}.file", True),
        )
    elif "file" in raw:
        raise ConfigError(f"{where}.file: only for type file")
    if kind == "syslog":
        s = raw.get("syslog")
        if not isinstance(s, dict):
            raise ConfigError(f"{where}.syslog: a mapping with at least address")
        w = f"{where}.syslog"
        _check_keys(s, _SYSLOG, w)
        address = _text(s, "address", w)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{w}.address: HOST:PORT (got {address!r})")
        facility = s.get("facility", 16)
        if isinstance(facility, str):
            if facility not in FACILITIES:
                raise ConfigError(f"{w}.facility: one of {', '.join(FACILITIES)} or 0..23")
            facility = FACILITIES[facility]
        if isinstance(facility, bool) or not isinstance(facility, int) or not 0 <= facility <= 23:
            raise ConfigError(f"{w}.facility: one of {', '.join(FACILITIES)} or 0..23")
        sd_id = _text(s, "sd_id", w, "flow@32473")
        if not re.match(r"^[!-~]{1,32}$", sd_id) or any(c in sd_id for c in '= ]"'):
            raise ConfigError(f"{w}.sd_id: an RFC 5424 SD-ID (e.g. flow@32473)")
        cfg.syslog = SyslogOptions(
            address=address,
            tls=_tls(s.get("tls"), f"{w}.tls"),
            app_name=_text(s, "app_name", w, "sensilla") or "sensilla",
            hostname=_text(s, "hostname", w),
            facility=facility,
            msgid=_text(s, "msgid", w) or ("ocsf" if fmt == "ocsf" else "flow"),
            sd_id=sd_id,
            connect_timeout_s=_number(s, "connect_timeout_s", w, 10, 0.1, 600),
            confirm_timeout_s=_number(s, "confirm_timeout_s", w, 30, 0.1, 3600),
        )
    elif "syslog" in raw:
        raise ConfigError(f"{where}.syslog: only for type syslog")
    return cfg


def parse_config(raw: Any, source: str = "exporter config") -> ExportersConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a mapping with 'exporters'")
    _check_keys(raw, {"state_dir", "exporters", "flowLogs"}, source)
    items = raw.get("exporters", raw.get("flowLogs"))
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: exporters: a non-empty list")
    state_dir = _text(raw, "state_dir", source, DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR
    exporters = [parse_exporter(item, f"exporters[{i}]") for i, item in enumerate(items)]
    names = [e.name for e in exporters]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: exporter names must be unique ({', '.join(dup)})")
    paths = [str(Path(e.file.path).resolve()) for e in exporters if e.file]
    if len(paths) != len(set(paths)):
        raise ConfigError(f"{source}: two file exporters write the same file")
    return ExportersConfig(state_dir=state_dir, exporters=exporters, source=source)


def load_config(path: str) -> ExportersConfig:
    """Read and check an exporter configuration file (YAML or JSON)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from None
    return parse_config(raw, path)
