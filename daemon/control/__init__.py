"""The control loop: observe, decide, sequence, act, confirm, record.

The controller (one tick at a time), the sequencer that orders a plan so no limit is crossed,
the actuator that sends steps with deadlines, the snapshot builder, the meter checks, GPU nodes
as the loop drives them, and the recorder interface its adapters (journal, metrics, MQTT) fill.

May import: wattshift.model, wattshift.policies, wattshift.drivers, daemon.config.
"""
