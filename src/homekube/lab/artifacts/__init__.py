"""Lab artifacts: Kubernetes, etcd, containerd, runc, CNI and flannel built from Go modules."""
