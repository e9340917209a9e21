"""Scenario scripts: each file builds a `mdm_world.Scenario` named `scenario` that reproduces one
MDM pitfall deterministically in virtual time. `mdmsim scenario list` shows them.
"""
