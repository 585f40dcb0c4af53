"""Replaying a trace through a policy and the sequencer on an in-process site model, and the
hindsight optimum (HiGHS) it is judged against; the back-test's own site file and traces.

May import: wattshift.model, wattshift.policies, daemon.config, daemon.control (the sequencer).
"""
