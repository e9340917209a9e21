"""mdm_server: the emulated MDM server (pure service core, storage, push, PKI and the twisted.web layer).

The pure core decides; IO layers (web, storage, push) only carry bytes to and from it.
"""
