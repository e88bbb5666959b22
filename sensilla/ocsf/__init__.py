"""OCSF (Open Cybersecurity Schema Framework) output: Hubble flows as Network
Activity events (``flow_to_ocsf``) and strict validation against the released
schema (``validate_event``, ``model_validate``). See docs/siem.md."""

from sensilla.ocsf.mapping import CLASS_UID, OCSF_VERSION, flow_to_ocsf
from sensilla.ocsf.schema import model_validate, validate_event

__all__ = ["CLASS_UID", "OCSF_VERSION", "flow_to_ocsf", "model_validate", "validate_event"]
