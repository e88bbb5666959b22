"""The relay's Prometheus metrics (one registry per relay, served by prometheus_client).

Names start with ``sensilla_relay_``. Per-collector series carry a ``collector`` label
(collector ids are few: one per node).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.flows = Counter(
            "sensilla_relay_ingested_flows",
            "Flows stored (each flow once; resent duplicates not counted)",
            ["collector"],
            registry=r,
        )
        self.batches = Counter(
            "sensilla_relay_ingested_batches",
            "Batches stored and acked",
            ["collector"],
            registry=r,
        )
        self.duplicate_batches = Counter(
            "sensilla_relay_duplicate_batches",
            "Resent batches that were already stored (acked again, not written)",
            ["collector"],
            registry=r,
        )
        self.recovered_batches = Counter(
            "sensilla_relay_recovered_batches",
            "Batches completed after a partial write (crash or store error)",
            ["collector"],
            registry=r,
        )
        self.lost_events = Counter(
            "sensilla_relay_collector_lost_events",
            "Events collectors reported lost (perf ring, spool overflow)",
            ["collector"],
            registry=r,
        )
        self.batch_latency = Histogram(
            "sensilla_relay_batch_latency_seconds",
            "From receiving a batch to acking it (queueing and storing)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write_seconds = Histogram(
            "sensilla_relay_store_write_seconds",
            "Duration of one store write (a round of batches)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write_flows = Histogram(
            "sensilla_relay_store_write_flows",
            "Flows per store write",
            buckets=(10, 100, 1000, 5000, 10000, 25000, 50000, 100000, 250000),
            registry=r,
        )
        self.store_errors = Counter(
            "sensilla_relay_store_errors", "Failed store operations", ["operation"], registry=r
        )
        self.store_healthy = Gauge(
            "sensilla_relay_store_healthy", "1 when the last store write succeeded", registry=r
        )
        self.pending_flows = Gauge(
            "sensilla_relay_pending_flows", "Flows received and not yet stored", registry=r
        )
        self.connected = Gauge(
            "sensilla_relay_connected_collectors",
            "Collectors with an open ingest stream",
            registry=r,
        )
        self.flow_control = Counter(
            "sensilla_relay_flow_control_messages",
            "FlowControl messages sent",
            ["state"],
            registry=r,
        )
        self.lag = Gauge(
            "sensilla_relay_collector_lag_seconds",
            "Age of the newest acked batch when it was acked (collector clock to ack)",
            ["collector"],
            registry=r,
        )
        self.acked_sequence = Gauge(
            "sensilla_relay_acked_sequence",
            "Highest batch sequence acked with no gap, for the collector's current boot",
            ["collector"],
            registry=r,
        )
        self.acked_boot = Gauge(
            "sensilla_relay_acked_boot_time_seconds",
            "Start of the collector boot the acked sequence belongs to (boot id / 1e9)",
            ["collector"],
            registry=r,
        )
        self.unacked_batches = Gauge(
            "sensilla_relay_collector_unacked_batches",
            "Batches received from the collector and not yet acked",
            ["collector"],
            registry=r,
        )
