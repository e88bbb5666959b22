"""The service map: workloads grouped by namespace, edges coloured by verdict.

``build_model`` turns the relay's ServiceMap answer into nodes and edges after
the page's display choices (collapsed namespaces, a text filter, a minimum flow
count); ``layout`` places namespace boxes on a grid with their workloads inside;
``figure`` draws a plotly figure whose edge markers carry the edge's key as
``customdata``, so that clicking an edge selects it (st.plotly_chart with
``on_select="rerun"``).

Merging the edges of collapsed namespaces sums counts of at most a few hundred
relay-aggregated edges; no raw flow is ever aggregated here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from sensilla.protos import flow_pb2

VERDICT_COLORS = {
    "FORWARDED": "#2e9e5b",
    "DROPPED": "#d62728",
    "AUDIT": "#f28e1c",
}
OTHER_COLOR = "#7f7f7f"
RESERVED_GROUP = "reserved"
COLLAPSED_PREFIX = "ns:"
# Above this many workloads the page collapses the largest namespaces by default.
READABLE_WORKLOADS = 30


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    group: str  # namespace, or RESERVED_GROUP
    kind: str  # workload kind, "reserved" or "namespace" (collapsed)
    members: int = 1


@dataclass(frozen=True)
class Edge:
    source: str
    destination: str
    protocol: str
    port: int
    verdict: str
    flows: int
    packets: int
    bytes: int
    drop_reasons: str = ""
    # With grouped ports: every "port/protocol" merged into this edge (protocol and
    # port are then set only when they are the same for all).
    ports: tuple[str, ...] = ()

    @property
    def port_label(self) -> str:
        if self.ports and len(self.ports) > 1:
            shown = ", ".join(self.ports[:3])
            return shown + (f" (+{len(self.ports) - 3})" if len(self.ports) > 3 else "")
        return f"{self.port}/{self.protocol}" if self.port else self.protocol

    @property
    def key(self) -> str:
        return f"{self.source}|{self.destination}|{self.protocol}|{self.port}|{self.verdict}"


@dataclass
class Model:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def edge(self, key: str) -> Edge | None:
        for e in self.edges:
            if e.key == key:
                return e
        return None


def node_label(node_id: str, nodes: dict[str, Node] | None = None) -> str:
    if nodes and node_id in nodes:
        n = nodes[node_id]
        if n.kind == "namespace":
            return f"{n.group}/*"
        if n.kind == "reserved":
            return n.label
        return f"{n.group}/{n.label}"
    if node_id.startswith(COLLAPSED_PREFIX):
        return node_id[len(COLLAPSED_PREFIX):] + "/*"
    if node_id.startswith("reserved:"):
        return node_id.split(":", 1)[1]
    return node_id


def edge_label(e: Edge, nodes: dict[str, Node] | None = None) -> str:
    return (f"{node_label(e.source, nodes)} → {node_label(e.destination, nodes)} · "
            f"{e.port_label} · {e.verdict} · {e.flows} flows")


def default_collapsed(workloads: pd.DataFrame, limit: int = READABLE_WORKLOADS) -> list[str]:
    """Namespaces to collapse so that at most ``limit`` workload nodes remain:
    the largest first."""
    ns_rows = workloads[workloads["namespace"] != ""]
    counts = ns_rows.groupby("namespace").size().sort_values(ascending=False)
    total = len(workloads)
    out: list[str] = []
    for ns, n in counts.items():
        if total <= limit:
            break
        out.append(str(ns))
        total -= int(n) - 1
    return sorted(out)


def build_model(
    workloads: pd.DataFrame,
    edges: pd.DataFrame,
    *,
    collapsed: Iterable[str] = (),
    text: str = "",
    min_flows: int = 0,
    group_ports: bool = False,
) -> Model:
    """Nodes and edges to draw. ``group_ports`` merges the edges of a pair that
    differ only by port and protocol (one arrow per pair and verdict)."""
    collapsed_set = set(collapsed)
    info: dict[str, tuple[str, str, str]] = {}
    for w in workloads.itertuples(index=False):
        info[str(w.id)] = (str(w.namespace), str(w.name), str(w.kind))

    counts: dict[str, int] = defaultdict(int)
    for ns, _name, _kind in info.values():
        if ns:
            counts[ns] += 1

    def node_for(wid: str) -> Node:
        ns, name, kind = info.get(wid, ("", "", ""))
        if not ns and not wid.startswith("reserved:") and "/" in wid:
            ns, name = wid.split("/", 1)
            kind = kind or "workload"
        if wid.startswith("reserved:") or (not ns and kind == "reserved"):
            return Node(wid, name or wid.split(":", 1)[-1], RESERVED_GROUP, "reserved")
        if ns in collapsed_set:
            return Node(COLLAPSED_PREFIX + ns, f"{counts.get(ns, 0)} workloads", ns,
                        "namespace", counts.get(ns, 0))
        return Node(wid, name or wid, ns or RESERVED_GROUP, kind or "workload")

    merged: dict[tuple[str, str, str, int, str], list[Any]] = {}
    reasons: dict[tuple[str, str, str, int, str], set[str]] = defaultdict(set)
    port_names: dict[tuple[str, str, str], set[tuple[str, int]]] = defaultdict(set)
    model = Model()
    for e in edges.itertuples(index=False):
        src, dst = node_for(str(e.source_id)), node_for(str(e.destination_id))
        model.nodes.setdefault(src.id, src)
        model.nodes.setdefault(dst.id, dst)
        k = (src.id, dst.id, str(e.protocol), int(e.port), str(e.verdict))
        port_names[k[:2] + k[4:]].add((str(e.protocol), int(e.port)))
        if group_ports:
            k = (src.id, dst.id, "*", -1, str(e.verdict))
        acc = merged.setdefault(k, [0, 0, 0])
        acc[0] += int(e.flows)
        acc[1] += int(e.packets)
        acc[2] += int(e.bytes)
        for r in str(e.drop_reasons).split(", "):
            if r:
                reasons[k].add(r)
    for wid in info:
        n = node_for(wid)
        model.nodes.setdefault(n.id, n)

    needle = text.strip().lower()
    kept_nodes: set[str] = set()
    for (s, d, proto, port, verdict), (flows, packets, nbytes) in merged.items():
        if flows < min_flows:
            continue
        if needle and needle not in node_label(s, model.nodes).lower() and (
            needle not in node_label(d, model.nodes).lower()
        ):
            continue
        why = ", ".join(sorted(reasons[(s, d, proto, port, verdict)]))
        if port == -1:  # grouped: keep port and protocol only when unique
            pairs = sorted(port_names[(s, d, verdict)], key=lambda pp: (pp[1], pp[0]))
            protos = {pp[0] for pp in pairs}
            proto = next(iter(protos)) if len(protos) == 1 else ""
            port = pairs[0][1] if len(pairs) == 1 else 0
            names = tuple(f"{pp[1]}/{pp[0]}" if pp[1] else pp[0] for pp in pairs)
            model.edges.append(Edge(s, d, proto, port, verdict, flows, packets, nbytes, why,
                                    names))
        else:
            model.edges.append(Edge(s, d, proto, port, verdict, flows, packets, nbytes, why))
        kept_nodes.update((s, d))
    if needle or min_flows:
        model.nodes = {
            k: n for k, n in model.nodes.items()
            if k in kept_nodes or (needle and needle in node_label(k, model.nodes).lower())
        }
    model.edges.sort(key=lambda e: (-e.flows, e.key))
    return model


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Box:
    group: str
    x0: float
    y0: float
    x1: float
    y1: float


def layout(model: Model) -> tuple[dict[str, tuple[float, float]], list[Box]]:
    """Node positions and namespace boxes. Groups are shelf-packed left to right,
    top to bottom; each group's nodes sit on a small grid inside its box."""
    groups: dict[str, list[Node]] = defaultdict(list)
    for n in model.nodes.values():
        groups[n.group].append(n)
    order = sorted(g for g in groups if g != RESERVED_GROUP)
    if RESERVED_GROUP in groups:
        order.append(RESERVED_GROUP)
    spacing, pad, gap = 1.6, 0.9, 0.8
    dims = {}
    for g in order:
        size = len(groups[g])
        cols = max(1, math.ceil(math.sqrt(size)))
        rows = max(1, math.ceil(size / cols))
        w = (cols - 1) * spacing + 2 * pad
        h = (rows - 1) * spacing + 2 * pad
        if any(n.kind == "namespace" for n in groups[g]):
            w, h = max(w, 3.2), max(h, 3.2)  # room for the arrows of its inner traffic
        dims[g] = (cols, rows, w, h)
    total_area = sum(w * h for _c, _r, w, h in dims.values()) or 1.0
    widest = max((w for _c, _r, w, _h in dims.values()), default=1.0)
    row_width = max(widest, math.sqrt(total_area) * 2.2)  # the page is wide

    pos: dict[str, tuple[float, float]] = {}
    boxes: list[Box] = []
    x = y = 0.0
    shelf = 0.0
    for g in order:
        cols, _rows, w, h = dims[g]
        if x > 0 and x + w > row_width:
            x = 0.0
            y -= shelf + gap
            shelf = 0.0
        boxes.append(Box(g, x, y - h, x + w, y))
        members = sorted(groups[g], key=lambda n: n.label)
        for i, n in enumerate(members):
            if n.kind == "namespace" and len(members) == 1:
                pos[n.id] = (x + w / 2, y - h / 2)
                continue
            cx = x + pad + (i % cols) * spacing
            cy = y - pad - (i // cols) * spacing
            pos[n.id] = (cx, cy)
        x += w + gap
        shelf = max(shelf, h)
    return pos, boxes


# --------------------------------------------------------------------------- figure


def _color(verdict: str) -> str:
    return VERDICT_COLORS.get(verdict, OTHER_COLOR)


def _edge_path(
    a: tuple[float, float], b: tuple[float, float], offset: float
) -> tuple[list[float], list[float], tuple[float, float], float]:
    """Points of an edge between two distinct nodes (a gentle curve when offset),
    the marker position and the marker's angle (degrees clockwise from north,
    plotly's convention)."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length, dx / length
    mx, my = (ax + bx) / 2 + nx * offset, (ay + by) / 2 + ny * offset
    xs, ys = [], []
    for i in range(11):
        t = i / 10
        # quadratic Bézier through the offset midpoint
        cx, cy = 2 * mx - (ax + bx) / 2, 2 * my - (ay + by) / 2
        xs.append((1 - t) ** 2 * ax + 2 * (1 - t) * t * cx + t**2 * bx)
        ys.append((1 - t) ** 2 * ay + 2 * (1 - t) * t * cy + t**2 * by)
    t = 0.6
    cx, cy = 2 * mx - (ax + bx) / 2, 2 * my - (ay + by) / 2
    px = (1 - t) ** 2 * ax + 2 * (1 - t) * t * cx + t**2 * bx
    py = (1 - t) ** 2 * ay + 2 * (1 - t) * t * cy + t**2 * by
    tx = 2 * (1 - t) * (cx - ax) + 2 * t * (bx - cx)
    ty = 2 * (1 - t) * (cy - ay) + 2 * t * (by - cy)
    angle = math.degrees(math.atan2(tx, ty))
    return xs, ys, (px, py), angle


def figure(model: Model, *, selected: str | None = None) -> go.Figure:
    pos, boxes = layout(model)
    fig = go.Figure()
    for b in boxes:
        reserved = b.group == RESERVED_GROUP
        fig.add_shape(type="rect", x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1, layer="below",
                      line={"color": "#b0b7c3", "width": 1, "dash": "dot" if reserved else
                            "solid"},
                      fillcolor="rgba(120,130,150,0.06)" if not reserved else
                      "rgba(200,200,200,0.08)")
        fig.add_annotation(x=b.x0 + 0.1, y=b.y1, text=f"<b>{b.group}</b>", showarrow=False,
                           xanchor="left", yanchor="bottom", font={"size": 13})

    # Every edge bends to its right, so a→b and b→a never overlap and long edges
    # do not run straight through the nodes in between; parallel edges (same
    # direction, other ports or verdicts) fan out further.
    lane_index: dict[tuple[str, str], int] = defaultdict(int)
    lines: dict[str, tuple[list[float | None], list[float | None]]] = {}
    mk: dict[str, list[Any]] = {k: [] for k in ("x", "y", "angle", "color", "key", "text",
                                                 "size", "label")}
    max_flows = max((e.flows for e in model.edges), default=1) or 1
    label_counts = len(model.edges) <= 60
    for e in model.edges:
        if e.source not in pos or e.destination not in pos:
            continue
        lane = lane_index[(e.source, e.destination)]
        lane_index[(e.source, e.destination)] += 1
        (ax, ay), (bx, by) = pos[e.source], pos[e.destination]
        verdict = e.verdict if e.verdict in VERDICT_COLORS else "OTHER"
        if e.source == e.destination:
            # Traffic inside one node (a collapsed namespace, or a workload talking
            # to itself): an arrow beside the node, pointing at it, no line.
            theta = math.radians(60 + 35 * lane)
            px, py = ax + 0.55 * math.cos(theta), ay + 0.55 * math.sin(theta)
            angle = math.degrees(math.atan2(ax - px, ay - py))
        else:
            length = math.hypot(bx - ax, by - ay)
            offset = -(min(0.12 * length, 1.2) + 0.28 * lane)
            xs, ys, (px, py), angle = _edge_path(pos[e.source], pos[e.destination], offset)
            lx, ly = lines.setdefault(verdict, ([], []))
            lx.extend([*xs, None])
            ly.extend([*ys, None])
        mk["x"].append(px)
        mk["y"].append(py)
        mk["angle"].append(angle)
        mk["color"].append(_color(e.verdict))
        mk["key"].append(e.key)
        mk["size"].append(12 + 8 * math.log10(1 + 9 * e.flows / max_flows))
        mk["label"].append(f"{e.flows:,}" if label_counts else "")
        port = e.port_label
        extra = f"<br>drop reasons: {e.drop_reasons}" if e.drop_reasons else ""
        mk["text"].append(
            f"{node_label(e.source, model.nodes)} → {node_label(e.destination, model.nodes)}"
            f"<br>{port} · {e.verdict}<br>{e.flows} flows · {e.packets} packets · "
            f"{e.bytes} bytes{extra}<br><i>click to show its flows</i>"
        )

    names = {"FORWARDED": "forwarded", "DROPPED": "dropped", "AUDIT": "audit",
             "OTHER": "other"}
    for verdict in ("FORWARDED", "AUDIT", "OTHER", "DROPPED"):
        if verdict not in lines:
            continue
        lx, ly = lines[verdict]
        fig.add_trace(go.Scatter(
            x=lx, y=ly, mode="lines", name=names[verdict], hoverinfo="skip",
            line={"color": VERDICT_COLORS.get(verdict, OTHER_COLOR),
                  "width": 2.2 if verdict == "DROPPED" else 1.5,
                  "dash": "dash" if verdict == "DROPPED" else "solid"},
            opacity=1.0 if verdict == "DROPPED" else 0.6,
        ))

    sel_index = [i for i, k in enumerate(mk["key"]) if k == selected]
    fig.add_trace(go.Scatter(
        x=mk["x"], y=mk["y"], mode="markers+text" if label_counts else "markers",
        name="edges", showlegend=False, text=mk["label"], textposition="top right",
        textfont={"size": 10, "color": mk["color"]},
        customdata=mk["key"], hovertext=mk["text"], hoverinfo="text",
        marker={"symbol": "arrow", "angle": mk["angle"], "size": mk["size"],
                "color": mk["color"], "line": {"width": 1, "color": "white"}},
        selectedpoints=sel_index if selected else None,
        selected={"marker": {"opacity": 1.0}},
        unselected={"marker": {"opacity": 0.55}},
    ))

    node_ids = [nid for nid in model.nodes if nid in pos]
    kinds = [model.nodes[n].kind for n in node_ids]
    fig.add_trace(go.Scatter(
        x=[pos[n][0] for n in node_ids], y=[pos[n][1] for n in node_ids],
        mode="markers+text", name="workloads", showlegend=False,
        text=[model.nodes[n].label for n in node_ids], textposition="bottom center",
        textfont={"size": 11},
        customdata=["node:" + n for n in node_ids],
        hovertext=[f"{node_label(n, model.nodes)} ({model.nodes[n].kind})" for n in node_ids],
        hoverinfo="text",
        marker={
            "size": [22 if k == "namespace" else 16 for k in kinds],
            "symbol": ["square" if k == "namespace" else
                       "diamond" if k == "reserved" else "circle" for k in kinds],
            "color": ["#6f4fb3" if k == "namespace" else "#8c8c8c" if k == "reserved"
                      else "#3b6fb6" for k in kinds],
            "line": {"width": 1, "color": "white"},
        },
    ))

    xs = [b.x0 for b in boxes] + [b.x1 for b in boxes]
    ys = [b.y0 for b in boxes] + [b.y1 for b in boxes]
    width = (max(xs) - min(xs)) if xs else 1.0
    height = (max(ys) - min(ys)) if ys else 1.0
    px_height = int(min(1200, max(420, 1000 * (height + 1) / (width + 1))))
    fig.update_layout(
        height=px_height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        hovermode="closest",
        dragmode="pan",
        clickmode="event+select",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        xaxis={"visible": False, "range": [min(xs, default=0) - 0.5,
                                           max(xs, default=1) + 0.5]},
        yaxis={"visible": False, "scaleanchor": "x", "scaleratio": 1,
               "range": [min(ys, default=0) - 0.5, max(ys, default=1) + 0.8]},
        uirevision="service-map",
    )
    return fig


def selected_edge_key(event: Any) -> str | None:
    """The edge key of a plotly selection event (st.plotly_chart on_select)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        try:
            points = event.selection.points
        except AttributeError:
            return None
    for p in points or []:
        data = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(data, list):
            data = data[0] if data else None
        if isinstance(data, str) and "|" in data and not data.startswith("node:"):
            return data
    return None


def edge_flow_query(edge: Edge) -> dict[str, Any]:
    """Keyword arguments for data.search_flows listing this edge's flows: the ends
    by workload id (or namespace prefix for a collapsed namespace), the verdict, and
    the port and protocol (one filter per port of a grouped edge, ORed)."""
    base = flow_pb2.FlowFilter()
    kwargs: dict[str, Any] = {}
    for end, node_id in (("source", edge.source), ("destination", edge.destination)):
        if node_id.startswith(COLLAPSED_PREFIX):
            ns = node_id[len(COLLAPSED_PREFIX):]
            getattr(base, f"{end}_pod").append(f"{ns}/")
        else:
            kwargs[f"{end}_workload_id"] = node_id
    if edge.verdict in flow_pb2.Verdict.DESCRIPTOR.values_by_name:
        base.verdict.append(flow_pb2.Verdict.Value(edge.verdict))  # type: ignore[arg-type]
    ports: list[tuple[str, int]] = []
    if len(edge.ports) > 1:
        for name in edge.ports:
            number, _, proto = name.partition("/")
            ports.append((proto, int(number)) if number.isascii() and number.isdigit()
                         else (number, 0))
    else:
        ports.append((edge.protocol, edge.port))
    filters = []
    for proto, port in ports:
        f = flow_pb2.FlowFilter()
        f.CopyFrom(base)
        if proto:
            f.protocol.append(proto.lower())
        if port:
            f.destination_port.append(str(port))
        filters.append(f)
    kwargs["whitelist"] = filters
    return kwargs
