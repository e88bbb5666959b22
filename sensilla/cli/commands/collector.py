"""`sensilla collector`: the node agent (one per node, root).

Enforcing half (this issue): watch the source, compile NetworkPolicy for this node,
program the datapath, publish the revision enforced. The observing half (flows,
Observer API, shipping) registers its components in collector.agent.main.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sensilla.cli.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("collector", help="the node agent: enforce policy, observe flows")
    p.add_argument("--node", required=True, help="this node's name (as in the source)")
    p.add_argument(
        "--source",
        default="lab",
        help="lab (the lab that has this node), lab:DIR (a state directory), or kubernetes",
    )
    p.add_argument("--lab", help="with --source lab: the lab's name")
    p.add_argument("--kubeconfig", help="with --source kubernetes: kubeconfig file")
    p.add_argument(
        "--netns",
        help="the node's network namespace, when not running inside it (default: our own)",
    )
    p.add_argument("--pin-root", default="/sys/fs/bpf/sensilla", help="bpffs directory for pins")
    p.add_argument(
        "--status-file", help="where to publish status (default with a lab: its status dir)"
    )
    p.add_argument("--poll", type=float, default=0.05, help="lab source poll interval (s)")
    obs = p.add_argument_group("observing (flows, Observer API, shipping)")
    obs.add_argument("--relay", metavar="ADDR", help="relay ingest HOST:PORT to ship flows to")
    obs.add_argument(
        "--listen", metavar="ADDR", help="HOST:PORT for the Observer API (Hubble's port is 4244)"
    )
    obs.add_argument(
        "--socket",
        metavar="PATH",
        help="unix socket for the Observer API (default: /var/run/sensilla/<node>/hubble.sock)",
    )
    obs.add_argument("--metrics", metavar="ADDR", help="HOST:PORT for Prometheus /metrics")
    obs.add_argument(
        "--health-listen",
        metavar="ADDR",
        help="HOST:PORT serving only gRPC health in plaintext (the kubelet's probes)",
    )
    obs.add_argument(
        "--spool-dir",
        default="/var/lib/sensilla/spool",
        help="directory of the shipping spool (default: %(default)s)",
    )
    obs.add_argument(
        "--spool-max-bytes", type=int, default=2 << 30, help="spool size limit in bytes"
    )
    obs.add_argument("--ring-size", type=int, default=4095, help="flows kept in the local ring")
    obs.add_argument(
        "--monitor-aggregation",
        choices=("none", "low", "medium", "maximum"),
        help="flow event aggregation in the datapath (default: medium)",
    )
    obs.add_argument(
        "--report-interval", type=float, help="seconds between reports of long connections"
    )
    obs.add_argument("--collector-id", help="stable id for shipping (default: the node name)")
    obs.add_argument(
        "--no-observe", action="store_true", help="enforce only: no flows, no Observer API"
    )
    from sensilla.security.flags import add_client_flags, add_server_flags

    add_server_flags(p)
    add_client_flags(p, prefix="relay-")
    p.add_argument(
        "--ready-line",
        action="store_true",
        help='print "ready" on stdout once the first revision is enforced',
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os

    from collector.agent.main import build_agent
    from collector.sources.lab import LabSource, LabSourceError, write_status

    log = logging.getLogger("sensilla.collector")
    source: object
    status_writer = None
    if args.source == "lab" or args.source.startswith("lab:"):
        try:
            if args.source == "lab":
                src = LabSource.for_node(args.node, args.lab)
            else:
                src = LabSource(args.source[4:])
        except LabSourceError as exc:
            raise UsageError(str(exc)) from exc
        src.poll_interval = args.poll
        if not (src.path / "nodes" / f"{args.node}.json").exists():
            raise UsageError(f"node {args.node!r} is not in {src.path}/nodes")
        state_dir = src.path

        def write(st: object) -> None:
            write_status(state_dir, args.node, st)  # type: ignore[arg-type]

        status_writer = write
        source = src
    elif args.source == "kubernetes":
        from collector.sources.kubernetes import DEFAULT_KINDS, KubernetesSource, SourceError

        try:
            ksrc = KubernetesSource.connect(kubeconfig=args.kubeconfig, kinds=DEFAULT_KINDS)
        except SourceError as exc:
            raise UsageError(str(exc)) from exc
        ksrc.start()
        if not ksrc.wait_synced(timeout=60):
            ksrc.close()
            raise UsageError("the Kubernetes source did not sync within 60 s")
        source = ksrc
    else:
        raise UsageError(f"--source {args.source!r}: expected lab, lab:DIR or kubernetes")

    if args.status_file:
        path = Path(args.status_file)

        def write_file(st: object) -> None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
            tmp.replace(path)

        status_writer = write_file

    if not args.no_observe:
        from collector.agent import main as agent_main
        from collector.agent.observing import ObserveConfig, factory

        for flag in ("relay", "listen", "metrics", "health_listen"):
            value = getattr(args, flag)
            if value and (":" not in value or not value.rpartition(":")[2].isdigit()):
                raise UsageError(f"--{flag.replace('_', '-')} {value!r}: expected HOST:PORT")
        from sensilla.security.flags import client_security, server_tls, token_store

        tls = server_tls(args, tcp=bool(args.listen), what="sensilla collector --listen")
        auth = token_store(args)
        relay_security = None
        if args.relay:
            if (
                args.tls_cert_file
                and not args.relay_tls_client_cert_file
                and (args.relay_tls or args.relay_tls_ca_cert_files)
            ):  # the node's own certificate (server and client use) towards the relay
                args.relay_tls_client_cert_file = args.tls_cert_file
                args.relay_tls_client_key_file = args.tls_key_file
            relay_security = client_security(args, "relay-", insecure=args.insecure)
            try:
                relay_security.check_target(args.relay)
            except ValueError as exc:
                raise UsageError(f"--relay: {exc}") from None
        agent_main.COMPONENT_FACTORIES.append(
            factory(
                ObserveConfig(
                    relay=args.relay,
                    listen=args.listen,
                    socket_path=args.socket or f"/var/run/sensilla/{args.node}/hubble.sock",
                    metrics=args.metrics,
                    spool_dir=args.spool_dir,
                    spool_max_bytes=args.spool_max_bytes,
                    ring_size=args.ring_size,
                    collector_id=args.collector_id,
                    aggregation=args.monitor_aggregation,
                    report_interval_s=args.report_interval,
                    tls=tls,
                    auth=auth,
                    relay_security=relay_security,
                    health_listen=args.health_listen,
                )
            )
        )
    agent = build_agent(
        args.node,
        source,  # type: ignore[arg-type]
        status_writer=status_writer,
        netns=args.netns,
        pin_root=args.pin_root,
        ready_line=args.ready_line,
    )
    log.info("collector for node %s, source %s", args.node, args.source)
    try:
        return asyncio.run(agent.run())
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
