"""Operations: the effectful verbs (apply, status, backup, restore, certs, nodes, reset)."""
