"""Explain through a relay, for `sensilla policy explain`: the same answer as the
local model (the relay runs the one policy model on its own watch of the source),
plus the last flow the relay stored for the pair and a policy that would allow it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sensilla.protos import flow_pb2, query_pb2

CONNECT_TIMEOUT = 0.5


class RelayUnusable(Exception):
    """The relay cannot answer (unreachable, no source, an old relay); use the local
    model instead."""


def lab_relay_address(state_dir: Path) -> str | None:
    """The relay a lab runs (from its lab.json next to the state directory)."""
    try:
        data = json.loads((Path(state_dir).parent / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    relay = data.get("relay") if isinstance(data, dict) else None
    addr = relay.get("address") if isinstance(relay, dict) else None
    return addr if isinstance(addr, str) and addr else None


def lab_relay_security(state_dir: Path) -> Any:
    """The credentials a lab describes for its relay (sensilla.security.lab): a
    ClientSecurity, or None when the lab runs plaintext."""
    from sensilla.security.tls import ClientSecurity, ClientTLS

    try:
        data = json.loads((Path(state_dir).parent / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    relay = data.get("relay") if isinstance(data, dict) else None
    if not isinstance(relay, dict) or not (relay.get("tls") or relay.get("token_file")):
        return None
    t = relay.get("tls") or {}
    tls = None
    if t:
        tls = ClientTLS(
            ca_files=(t["ca"],), cert_file=t.get("cert", ""), key_file=t.get("key", ""),
            server_name=t.get("server_name", ""),
        )  # fmt: skip
    return ClientSecurity(tls=tls, token_file=relay.get("token_file") or "")


def explain(
    address: str,
    source: str,
    destination: str,
    port: int | None,
    protocol: str,
    family: int = 4,
    timeout: float = 10.0,
    *,
    required: bool = False,
    security: Any = None,
) -> query_pb2.ExplainResponse:
    """Ask the relay. Raises RelayUnusable when it cannot answer (required=False);
    errors about the request itself (INVALID_ARGUMENT) raise ValueError.
    ``security``: a sensilla.security.tls.ClientSecurity (TLS, token)."""
    import grpc

    from sensilla.protos import query_pb2_grpc
    from sensilla.security.tls import ClientSecurity, TLSConfigError, secure_channel

    try:
        ch = secure_channel(address, security or ClientSecurity())
    except TLSConfigError as exc:
        if required:
            raise ValueError(str(exc)) from None
        raise RelayUnusable(str(exc)) from None
    try:
        try:
            grpc.channel_ready_future(ch).result(timeout=timeout if required else CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            raise RelayUnusable(f"no relay answers at {address}") from None
        req = query_pb2.ExplainRequest(
            source=source, destination=destination, port=port or 0, protocol=protocol,
            family=family,
        )  # fmt: skip
        try:
            resp: query_pb2.ExplainResponse = query_pb2_grpc.QueryStub(ch).Explain(
                req, timeout=timeout
            )
            return resp
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(err.details()) from None
            raise RelayUnusable(f"{address}: {err.code().name}: {err.details()}") from None
    finally:
        ch.close()


def _verdict_name(v: int) -> str:
    return flow_pb2.Verdict.Name(v) if v in flow_pb2.Verdict.values() else str(v)


def describe_flow(f: flow_pb2.Flow) -> str:
    when = f.time.ToJsonString() if f.HasField("time") else "?"
    text = f"{when} {_verdict_name(f.verdict)}"
    if f.verdict == flow_pb2.DROPPED and f.drop_reason_desc:
        text += f" ({flow_pb2.DropReason.Name(f.drop_reason_desc)})"
    if f.node_name:
        text += f" on {f.node_name}"
    return text


def format_text(resp: query_pb2.ExplainResponse, address: str) -> str:
    lines = [resp.explanation]
    if resp.HasField("last_observed"):
        lines.append(f"Last observed (relay {address}): {describe_flow(resp.last_observed)}")
    else:
        lines.append(f"Last observed (relay {address}): no such flow stored")
    if resp.suggested_policy:
        lines.append("A NetworkPolicy that would allow it:")
        lines.append(resp.suggested_policy.rstrip())
    return "\n".join(lines)


def _side(d: query_pb2.DirectionVerdict, direction: str) -> dict[str, Any]:
    return {
        "direction": direction,
        "pod": d.pod or None,
        "reason": d.reason,
        "allowed": d.allowed,
        "audit": d.audit,
        "selected_by": [f"{r.namespace}/{r.name}" for r in d.selected_by],
        "allowed_by": [
            {
                "policy": f"{r.namespace}/{r.name}",
                "rule": f"{r.namespace}/{r.name} {r.rule}".strip(),
                "peer": r.peer,
                "port": r.port,
            }
            for r in d.allowed_by
        ],
    }


def to_dict(
    resp: query_pb2.ExplainResponse,
    src: str,
    dst: str,
    port: int | None,
    protocol: str,
    address: str,
) -> dict[str, Any]:
    """The local explain JSON's fields, plus what the relay adds."""
    from google.protobuf import json_format

    verdict = "FORWARDED" if resp.allowed else ("AUDIT" if resp.forwarded else "DROPPED")
    out: dict[str, Any] = {
        "from": src,
        "to": dst,
        "port": port,
        "protocol": protocol,
        "allowed": resp.allowed,
        "forwarded": resp.forwarded,
        "verdict": verdict,
        "egress": _side(resp.egress, "Egress"),
        "ingress": _side(resp.ingress, "Ingress"),
        "revision": resp.revision,
        "relay": address,
        "last_observed": json_format.MessageToDict(resp.last_observed)
        if resp.HasField("last_observed")
        else None,
        "suggested_policy": resp.suggested_policy or None,
    }
    return out
