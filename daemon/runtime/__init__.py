"""The running service's assembly: a daemon opened from a site file (drivers, feeds, policy,
recorders, loop), the operator controls around it, policy hot reload, Prometheus metrics, systemd.

May import: wattshift.model, wattshift.policies, wattshift.drivers and every other room of the
daemon but cli and demo.
"""
