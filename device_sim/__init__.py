"""device_sim: simulated iOS devices (sans-IO state machines) and the Twisted fleet runner that drives them.

The machines speak mdm_protocol; the runner owns sockets and time.
"""
