"""Files and objects homekube writes to hosts or applies to the cluster — pure and typed.

Nothing in this package does I/O: renderers take a ``ClusterConfig`` (and host facts passed
in as arguments) and return text or plain data. Machine-read YAML is written only by
:mod:`homekube.render.yamlout`.
"""
