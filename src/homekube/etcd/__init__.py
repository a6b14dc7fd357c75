"""etcd's one home: where its files live, what we ask it, how we read the answers.

    layout      every path, port and URL (no homekube imports: anything may use it)
    api         the requests as data, and one pure parser per answer
    shell       the host-side shell form of the requests: etcdctl commands, the fact, step scripts
    membership  quorum, learners, join order and version gates, as pure functions
    snapshot    the one snapshot script (the backup timer and `homekube backup` both run it)
    client      the operator-side HTTPS client (I/O: sits in the effects layer)

Everything except `client` is pure and sits below the planners (see the import contracts in
pyproject.toml); this package's ``__init__`` imports nothing, so importing a pure part never
pulls the client in.
"""
