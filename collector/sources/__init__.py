"""Sources of cluster state: the lab state directory, a Kubernetes API server."""
