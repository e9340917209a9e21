"""The EPMM-style admin model on top of the MDM core: settings, users and their certificates, labels,
Apply to Label, sync policies. It turns an administrator's intent into per-device InstallProfile commands.
"""
