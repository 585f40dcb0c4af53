"""The domain, at the bottom of the house: what a site *is*, with no I/O and no service.

The snapshot a policy sees and the loads in it (miners, GPU nodes, jobs), the limit tree and its
arithmetic, the budget schedule, efficiency curves and the miner spec table, the enums policies use
(power control, flexibility tier, job state), and the small registry every pluggable kind shares.

May import: the standard library and pydantic. Nothing else of wattshift imports below it.
"""
