"""Shipping flows to the relay over sensilla.ingest.v1: batches, a durable bounded
spool, acknowledgements, resends after reconnects."""
