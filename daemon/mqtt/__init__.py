"""The daemon on MQTT: topics, the command parser and the delivery checks (pure), the handler that applies commands,
the outbox of state to publish, the bridge that owns the connection, and the link's metrics.

May import: wattshift.model, daemon.config, daemon.control (the recorder interface, tick reports),
daemon.journal (entry rules). Never imported by daemon.control.
"""
