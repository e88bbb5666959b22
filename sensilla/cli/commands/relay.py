"""`sensilla relay --store URL [--listen ADDR ...]`: the relay process."""

from __future__ import annotations

import argparse
from pathlib import Path

from sensilla.cli.errors import UsageError

DEFAULT_STORE = "chdb:///var/lib/sensilla/relay"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "relay",
        help="run the relay: ingest from collectors into ClickHouse, serve the APIs",
        description=(
            "Store URLs: chdb:///PATH (embedded, default; one relay per path) or "
            "clickhouse://[USER[:PASSWORD]@]HOST[:PORT]/DB[?secure=1&verify=0&ca_certs=F"
            "&compression=lz4|zstd|none&password_file=F] (clickhouses:// for TLS). "
            "Credentials may also come from SENSILLA_CLICKHOUSE_USER, "
            "SENSILLA_CLICKHOUSE_PASSWORD or SENSILLA_CLICKHOUSE_PASSWORD_FILE."
        ),
    )
    p.add_argument("--store", default=DEFAULT_STORE, help="store URL (default: %(default)s)")
    p.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="HOST:PORT to serve gRPC on; repeatable (default: 127.0.0.1:4245)",
    )
    p.add_argument("--metrics", metavar="ADDR", help="HOST:PORT for Prometheus /metrics")
    p.add_argument(
        "--health-listen",
        action="append",
        default=[],
        metavar="ADDR",
        help="HOST:PORT serving only gRPC health in plaintext (for the kubelet's probes "
        "when --listen uses TLS); repeatable",
    )
    p.add_argument("--retention-days", type=int, default=7, help="days of raw flows kept")
    p.add_argument("--rollup-minute-days", type=int, default=30, help="days of minute rollups")
    p.add_argument("--rollup-hour-days", type=int, default=400, help="days of hour rollups")
    p.add_argument(
        "--max-batch-flows",
        type=int,
        default=20_000,
        help="flows per store write at most (default: %(default)s)",
    )
    p.add_argument(
        "--max-batch-delay",
        type=float,
        default=0.25,
        help="seconds a store write waits for more batches (default: %(default)s)",
    )
    p.add_argument(
        "--max-pending-flows",
        type=int,
        default=200_000,
        help="flows held in memory before ingest pushes back (default: %(default)s)",
    )
    p.add_argument(
        "--store-slow-after",
        type=float,
        default=5.0,
        help="seconds a store write may take before collectors are told to back off",
    )
    p.add_argument("--ready-file", help="write the bound addresses as JSON here once serving")
    p.add_argument(
        "--exporter-config",
        metavar="FILE",
        help="run the exporters of this YAML/JSON file (files, syslog, stdout; docs/siem.md)",
    )
    from sensilla.security.flags import add_server_flags

    add_server_flags(p)
    api = p.add_argument_group("read APIs (Observer, query)")
    api.add_argument(
        "--source",
        metavar="lab:DIR|kubernetes[:KUBECONFIG]",
        help="watch the cluster (read-only) for Explain, endpoints and the node list",
    )
    api.add_argument("--max-filters", type=int, default=64, help="filters per request")
    api.add_argument("--max-page-size", type=int, default=1000, help="SearchFlows page size")
    api.add_argument(
        "--max-followers-per-client", type=int, default=16, help="concurrent follows per client"
    )
    api.add_argument(
        "--follower-queue", type=int, default=20_000, help="flows queued per follower"
    )
    p.set_defaults(handler=_relay)


def _relay(args: argparse.Namespace) -> int:
    import asyncio

    from relay.server import DEFAULT_LISTEN, RelayConfig, run_relay, split_host_port
    from relay.store import Retention, StoreURLError, parse_store_url

    try:
        parse_store_url(args.store)
    except StoreURLError as exc:
        raise UsageError(f"--store: {exc}") from None
    listen = args.listen or [DEFAULT_LISTEN]
    for addr in [*listen, *args.health_listen, *([args.metrics] if args.metrics else [])]:
        try:
            split_host_port(addr)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        retention = Retention(args.retention_days, args.rollup_minute_days, args.rollup_hour_days)
    except ValueError as exc:
        raise UsageError(f"--retention-days/--rollup-*-days: {exc}") from None
    for name in ("max_batch_flows", "max_pending_flows"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.store_slow_after <= 3600:
        raise UsageError("--store-slow-after must be within (0, 3600] seconds")
    if not 0 <= args.max_batch_delay <= 10:
        raise UsageError("--max-batch-delay must be within 0..10 seconds")
    from relay.observer.limits import Limits
    from relay.query.source import SourceSpecError, parse_source

    if args.source:
        try:
            spec = parse_source(args.source)
        except SourceSpecError as exc:
            raise UsageError(str(exc)) from None
        if spec.kind == "lab" and not Path(spec.path).is_dir():
            raise UsageError(f"--source lab:{spec.path}: no such directory")
    try:
        limits = Limits(
            max_filters=args.max_filters,
            max_page_size=args.max_page_size,
            default_page_size=min(100, args.max_page_size),
            max_followers_per_client=args.max_followers_per_client,
            follower_queue_flows=args.follower_queue,
        )
    except ValueError as exc:
        raise UsageError(f"--max-*/--follower-queue: {exc}") from None
    exporters = None
    if args.exporter_config:
        from relay.siem.config import ConfigError, load_config

        try:
            exporters = load_config(args.exporter_config)
        except ConfigError as exc:
            raise UsageError(f"--exporter-config: {exc}") from None
    from sensilla.security.flags import server_tls, token_store

    tls = server_tls(args, tcp=True, what="sensilla relay")
    auth = token_store(args)
    config = RelayConfig(
        tls=tls,
        auth=auth,
        health_listen=args.health_listen,
        store_url=args.store,
        listen=listen,
        metrics_address=args.metrics,
        retention=retention,
        max_round_flows=args.max_batch_flows,
        max_round_delay=args.max_batch_delay,
        max_pending_flows=args.max_pending_flows,
        slow_after_s=args.store_slow_after,
        ready_file=args.ready_file,
        exporters=exporters,
        source=args.source,
        limits=limits,
    )
    try:
        asyncio.run(run_relay(config))
    except SourceSpecError as exc:
        raise UsageError(str(exc)) from None
    return 0
