"""The collector's local Observer: a ring of recent flows served over Hubble's
observer.Observer gRPC API (unix socket and TCP)."""
