"""homekube: a kubeadm home cluster with a TLS etcd, built and run over SSH from one cluster.yaml."""

__version__ = "0.1.0"
