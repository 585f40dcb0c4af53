"""The built-in demo: a simulated site (miners, GPU nodes, jobs, a meter, a private broker) and the
daemon on it, exactly as ``wattshift run`` would drive a real one.

May import: anything in wattshift, the simulators included (the only room of the daemon that does).
"""
