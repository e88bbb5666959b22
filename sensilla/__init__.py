"""Sensilla: network-flow observability and NetworkPolicy enforcement for Kubernetes.

This package holds the command line (`sensilla.cli`), the wire types
(`sensilla.protos`: the .proto files and the code generated from them at bootstrap)
and the lab cluster used by the demo and the tests (`sensilla.lab`).
"""

__version__ = "0.1.0"
