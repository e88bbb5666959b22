"""Turning datapath flow events into Hubble flows: enrichment and building."""
