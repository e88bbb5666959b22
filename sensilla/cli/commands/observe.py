"""``sensilla observe``: flows from a relay or a collector, with Hubble's filters and
output formats (hubble observe's flags, request and printing)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sensilla.cli.errors import UsageError

DEFAULT_SERVER = "localhost:4245"

# (flag, short, help); each value is added to the request as hubble observe does
_VALUE_FILTERS: tuple[tuple[str, str | None, str], ...] = (
    ("uuid", None, "Show the only flow matching this unique flow identifier, if any"),
    (
        "node-name",
        None,
        'Show all flows which match the given node names (e.g. "k8s*", "cluster/*.example.com")',
    ),
    (
        "cluster",
        None,
        'Show all flows which match the cluster names (e.g. "test-cluster", "prod-*")',
    ),
    (
        "protocol",
        None,
        'Show only flows which match the given L4/L7 flow protocol (e.g. "udp", "http")',
    ),
    (
        "tcp-flags",
        None,
        'Show only flows which match the given TCP flags (e.g. "syn", "ack", "fin")',
    ),
    (
        "type",
        "-t",
        "Filter by event types TYPE[:SUBTYPE] (trace[:to-endpoint|from-endpoint|...], "
        "drop, policy-verdict, capture, l7, trace-sock, or numbers)",
    ),
    (
        "verdict",
        None,
        "Show only flows with this verdict [FORWARDED, DROPPED, AUDIT, REDIRECTED, "
        "ERROR, TRACED, TRANSLATED]",
    ),
    (
        "drop-reason-desc",
        None,
        'Show only flows which match this drop reason describe (e.g. "POLICY_DENIED", '
        '"UNSUPPORTED_L3_PROTOCOL")',
    ),
    ("from-ip", None, "Show all flows originating at the given IP address or CIDR range"),
    ("ip", None, "Show all flows originating or terminating at the given IP address or CIDR range"),
    ("to-ip", None, "Show all flows terminating at the given IP address or CIDR range"),
    ("ip-version", None, 'Show only IPv4, IPv6 flows or non IP flows ("none", "v4", "v6")'),
    (
        "from-pod",
        None,
        "Show all flows originating in the given pod name prefix ([namespace/]<pod-name>). "
        "If namespace is not provided, 'default' is used",
    ),
    (
        "pod",
        None,
        "Show all flows related to the given pod name prefix ([namespace/]<pod-name>). "
        "If namespace is not provided, 'default' is used",
    ),
    (
        "to-pod",
        None,
        "Show all flows terminating in the given pod name prefix ([namespace/]<pod-name>). "
        "If namespace is not provided, 'default' is used",
    ),
    ("from-namespace", None, "Show all flows originating in the given Kubernetes namespace"),
    ("namespace", "-n", "Show all flows related to the given Kubernetes namespace"),
    ("to-namespace", None, "Show all flows terminating in the given Kubernetes namespace"),
    (
        "from-label",
        None,
        'Show only flows originating in an endpoint with the given labels (e.g. "key1=value1", '
        '"reserved:world")',
    ),
    (
        "label",
        "-l",
        'Show only flows related to an endpoint with the given labels (e.g. "key1=value1", '
        '"reserved:world")',
    ),
    (
        "to-label",
        None,
        'Show only flows terminating in an endpoint with given labels (e.g. "key1=value1", '
        '"reserved:world")',
    ),
    (
        "from-service",
        None,
        "Show flows from the given service name prefix ([namespace/]<svc-name>)",
    ),
    (
        "service",
        None,
        "Show flows from or to the given service name prefix ([namespace/]<svc-name>)",
    ),
    ("to-service", None, "Show flows to the given service name prefix ([namespace/]<svc-name>)"),
    ("from-port", None, "Show only flows with the given source port (e.g. 8080)"),
    ("port", None, "Show only flows with given port in either source or destination (e.g. 8080)"),
    ("to-port", None, "Show only flows with the given destination port (e.g. 8080)"),
    (
        "from-workload",
        None,
        "Show all flows originating at an endpoint with the given workload ([kind/]name)",
    ),
    (
        "workload",
        None,
        "Show all flows related to an endpoint with the given workload ([kind/]name)",
    ),
    (
        "to-workload",
        None,
        "Show all flows terminating at an endpoint with the given workload ([kind/]name)",
    ),
    (
        "from-identity",
        None,
        "Show all flows originating at an endpoint with the given security identity",
    ),
    ("identity", None, "Show all flows related to an endpoint with the given security identity"),
    (
        "to-identity",
        None,
        "Show all flows terminating at an endpoint with the given security identity",
    ),
    (
        "traffic-direction",
        None,
        "Show all flows in the given traffic direction (either ingress or egress)",
    ),
    ("interface", None, "Show all flows observed at the given interface name (e.g. eth0)"),
)
_SWITCH_FILTERS: tuple[tuple[str, str | None, str, str], ...] = (
    ("not", None, "", "Reverses the next filter to be blacklist i.e. --not --from-ip 2.2.2.2"),
    ("ipv4", "-4", "v4", "Show only IPv4 flows"),
    ("ipv6", "-6", "v6", "Show only IPv6 flows"),
    ("all-namespaces", "-A", "true", "Show all flows in any Kubernetes namespace"),
    ("from-all-namespaces", None, "true", "Show flows originating in any Kubernetes namespace"),
    ("to-all-namespaces", None, "true", "Show flows terminating in any Kubernetes namespace"),
)


class _FilterFlag(argparse.Action):
    """Records filter flags in command-line order (--not applies to the next one)."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        filter_name: str = "",
        switch_value: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.filter_name = filter_name
        self.switch_value = switch_value
        if switch_value is not None:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        flags = list(getattr(namespace, self.dest, None) or [])
        value = self.switch_value if self.switch_value is not None else str(values)
        flags.append((self.filter_name, value))
        setattr(namespace, self.dest, flags)


def register(subparsers: Any) -> None:
    from sensilla.output.timefmt import FORMAT_NAMES

    p = subparsers.add_parser(
        "observe",
        help="observe flows of a relay or collector (Hubble's filters and formats)",
        description=(
            "Observe flows of a Sensilla relay (default) or collector, with hubble observe's "
            "filters. Values of one flag are OR'd, different flags are AND'd; --not negates "
            "the next filter flag."
        ),
    )
    filters = p.add_argument_group("filters")
    for name, short, help_text in _VALUE_FILTERS:
        opts = [f"--{name}"] + ([short] if short else [])
        filters.add_argument(
            *opts,
            action=_FilterFlag,
            dest="filter_flags",
            filter_name=name,
            metavar=name.upper().replace("-", "_"),
            help=help_text,
        )
    for name, short, value, help_text in _SWITCH_FILTERS:
        opts = [f"--{name}"] + ([short] if short else [])
        filters.add_argument(
            *opts,
            action=_FilterFlag,
            dest="filter_flags",
            filter_name=name,
            switch_value=value,
            help=help_text,
        )
    sel = p.add_argument_group("selectors")
    sel.add_argument(
        "--last",
        type=int,
        default=0,
        metavar="N",
        help="Get last N flows stored (default 20 when no other selector is given)",
    )
    sel.add_argument("--first", type=int, default=0, metavar="N", help="Get first N flows stored")
    sel.add_argument("--all", action="store_true", help="Get all flows stored")
    sel.add_argument("-f", "--follow", action="store_true", help="Follow flows output")
    sel.add_argument(
        "--since",
        default="",
        help='Filter flows since a specific date: relative ("5s", '
        '"2m", "3h") or RFC3339 ("2006-01-02T15:04:05Z")',
    )
    sel.add_argument(
        "--until", default="", help="Filter flows until a specific date (ignored with --follow)"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "-o",
        "--output",
        default="compact",
        help="Output format: compact, dict, json, jsonpb, table or ocsf (default compact)",
    )
    out.add_argument(
        "--time-format",
        default="StampMilli",
        help=f"Time format of the timestamps ({', '.join(FORMAT_NAMES)})",
    )
    out.add_argument(
        "--color",
        default="auto",
        choices=["auto", "always", "never"],
        help="Colorize compact and dict output",
    )
    out.add_argument(
        "--print-node-name", action="store_true", help="Print the node name of each flow"
    )
    out.add_argument(
        "--numeric", action="store_true", help="Display all information in numeric form"
    )
    out.add_argument(
        "--print-raw-filters",
        action="store_true",
        help="Print the allowlist/denylist filters and exit without sending the request",
    )
    out.add_argument(
        "-D", "--debug", action="store_true", help="Also print informational node events"
    )
    conn = p.add_argument_group("server")
    conn.add_argument(
        "--server",
        default=os.environ.get("SENSILLA_SERVER", DEFAULT_SERVER),
        help=f"Address of a relay or collector Observer (host:port or unix:///path; "
        f"default {DEFAULT_SERVER}, or $SENSILLA_SERVER)",
    )
    conn.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="Connection timeout (default 5s)",
    )
    from sensilla.security.flags import add_client_flags

    add_client_flags(p)
    p.set_defaults(handler=_run, filter_flags=[])


def build_request(args: argparse.Namespace) -> Any:
    """The GetFlowsRequest hubble observe would send for these arguments."""
    from sensilla.filters import FilterError, compile_request
    from sensilla.filters.hubble_cli import (
        FlagError,
        FlowFilterBuilder,
        Selectors,
        build_get_flows_request,
    )

    builder = FlowFilterBuilder()
    try:
        for name, value in args.filter_flags:
            builder.set(name, value)
        builder.check_complete()
        sel = Selectors(
            last=args.last,
            first=args.first,
            all=args.all,
            follow=args.follow,
            since=args.since,
            until=args.until,
        )
        if args.last < 0 or args.first < 0:
            raise FlagError("--last and --first take a positive number")
        req = build_get_flows_request(sel, builder.whitelist(), builder.blacklist())
    except FlagError as exc:
        raise UsageError(str(exc)) from None
    try:
        compile_request(req)
    except FilterError as exc:
        raise UsageError(f"invalid filter: {exc}") from None
    return req


def _raw_filters_yaml(req: Any) -> str:
    import yaml

    from sensilla.output.formats.jsonpb import to_json

    doc = {}
    if req.whitelist:
        doc["allowlist"] = [to_json(f) for f in req.whitelist]
    if req.blacklist:
        doc["denylist"] = [to_json(f) for f in req.blacklist]
    # the filters are JSON strings inside YAML, as hubble prints them
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False) if doc else "{}\n"


def _run(args: argparse.Namespace) -> int:
    from sensilla.output import PrinterOptions, available_formats, make_printer

    if args.output not in available_formats():
        raise UsageError(f"invalid output format: {args.output}")
    if args.output in ("table", "tab") and args.follow:
        raise UsageError("table output format is not compatible with follow mode")
    req = build_request(args)
    if args.print_raw_filters:
        sys.stdout.write(_raw_filters_yaml(req))
        return 0
    printer = make_printer(
        args.output,
        PrinterOptions(
            out=sys.stdout,
            err=sys.stderr,
            time_format=args.time_format,
            color=args.color,
            node_name=args.print_node_name,
            ip_translation=not args.numeric,
            debug=args.debug,
        ),
    )
    from sensilla.security.flags import client_security

    return _stream(args.server, args.timeout, req, printer, client_security(args))


def _stream(server: str, timeout: float, req: Any, printer: Any, security: Any = None) -> int:
    import grpc

    from sensilla.protos import observer_pb2_grpc
    from sensilla.security.flags import connect
    from sensilla.security.tls import ClientSecurity

    channel = connect(server, security or ClientSecurity())
    call = None
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            print(
                f"sensilla observe: failed to connect to {server!r}: no answer within {timeout:g}s",
                file=sys.stderr,
            )
            return 1
        stub = observer_pb2_grpc.ObserverStub(channel)
        call = stub.GetFlows(req)
        try:
            for resp in call:
                printer.write(resp)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return 0
            print(f"sensilla observe: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        if call is not None:
            call.cancel()
        return 0
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly
        if call is not None:
            call.cancel()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        try:
            printer.close()
        except BrokenPipeError:
            pass
        channel.close()
