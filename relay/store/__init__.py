"""The relay's store: flows in ClickHouse (chDB embedded or a server over the native
protocol), written exactly once, with rollups and retention. See docs/storage.md.

    store = open_store("chdb:///var/lib/sensilla/relay")
    store.insert_batch(collector_id, boot_id, batch_seq, flows)   # durable on return
    store.acked_positions(collector_id)                          # {boot_id: batch_seq}
    store.iter_flows(since_ns, until_ns)                         # flows as received
"""

from relay.store.backend import StoreError, StoreUnavailable
from relay.store.params import ParamError
from relay.store.store import (
    BatchError,
    IngestBatch,
    RecoveryReport,
    Retention,
    Store,
    WriteResult,
    open_store,
    validate_batch,
)
from relay.store.url import StoreURL, StoreURLError, parse_store_url

__all__ = [
    "BatchError",
    "IngestBatch",
    "ParamError",
    "RecoveryReport",
    "Retention",
    "Store",
    "StoreError",
    "StoreURL",
    "StoreURLError",
    "StoreUnavailable",
    "WriteResult",
    "open_store",
    "parse_store_url",
    "validate_batch",
]
