"""mdmsim: the command-line tool that assembles the MDM server, simulated fleets, scenarios and load tests.

Library code lives in mdm_protocol, mdm_server and device_sim; this package only wires them.
"""
