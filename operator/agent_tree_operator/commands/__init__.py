"""``agent-tree`` commands that act on the cluster as the caller (their kubeconfig), not as the operator."""
