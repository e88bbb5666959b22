"""Canned responses for the printer and observe tests."""

from __future__ import annotations

from google.protobuf import wrappers_pb2

from sensilla.protos import extensions_pb2, flow_pb2, observer_pb2, relay_pb2

T0 = 1764131789  # Nov 26 04:36:29 2025 UTC


def flow(**kw: object) -> flow_pb2.Flow:
    f = flow_pb2.Flow(
        uuid="11111111-2222-3333-4444-555555555555",
        node_name="k8s1",
        verdict=flow_pb2.FORWARDED,
        IP=flow_pb2.IP(source="10.244.1.5", destination="10.244.2.7", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(
            TCP=flow_pb2.TCP(
                source_port=43210, destination_port=80, flags=flow_pb2.TCPFlags(SYN=True)
            )
        ),
        source=flow_pb2.Endpoint(
            ID=11,
            identity=1234,
            namespace="x",
            pod_name="a",
            labels=["k8s:pod=a", "k8s:io.kubernetes.pod.namespace=x"],
        ),
        destination=flow_pb2.Endpoint(
            ID=22,
            identity=5678,
            namespace="y",
            pod_name="b",
            labels=["k8s:pod=b", "k8s:io.kubernetes.pod.namespace=y"],
        ),
        Type=flow_pb2.L3_L4,
        event_type=flow_pb2.CiliumEventType(type=4, sub_type=0),
        is_reply=wrappers_pb2.BoolValue(value=False),
        traffic_direction=flow_pb2.INGRESS,
        Summary="TCP Flags: SYN",
    )
    f.time.seconds, f.time.nanos = T0, 123_456_789
    for key, value in kw.items():
        if hasattr(value, "DESCRIPTOR"):
            getattr(f, key).CopyFrom(value)
        elif isinstance(value, list):
            del getattr(f, key)[:]
            getattr(f, key).extend(value)
        else:
            setattr(f, key, value)
    return f


def response(f: flow_pb2.Flow) -> observer_pb2.GetFlowsResponse:
    r = observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name)
    r.time.CopyFrom(f.time)
    return r


def with_extension(f: flow_pb2.Flow, seq: int) -> flow_pb2.Flow:
    f.extensions.Pack(
        extensions_pb2.FlowExtension(
            packets=2,
            bytes=120,
            position=extensions_pb2.Position(
                collector_id="k8s1", boot_id=1764131000000000000, sequence=seq
            ),
        )
    )
    return f


def lost(count: int = 42, cpu: int = 3) -> observer_pb2.GetFlowsResponse:
    return observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(
            source=flow_pb2.PERF_EVENT_RING_BUFFER,
            num_events_lost=count,
            cpu=wrappers_pb2.Int32Value(value=cpu),
        )
    )


def node_status(state: int, names: list[str], message: str = "") -> observer_pb2.GetFlowsResponse:
    r = observer_pb2.GetFlowsResponse(
        node_status=relay_pb2.NodeStatusEvent(
            state_change=state,  # type: ignore[arg-type]
            node_names=names,
            message=message,
        ),
        node_name="relay",
    )
    r.time.seconds = T0
    return r
