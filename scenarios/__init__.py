"""Scenario scripts: each file builds a `mdmsim.scenario.Scenario` named `scenario` that reproduces one
MDM pitfall deterministically in virtual time. `mdmsim scenario list` shows them.
"""
