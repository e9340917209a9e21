"""`mdmsim load`: orchestration, fleet workers, HdrHistogram statistics, thresholds and reports.

The CLI in `mdmsim/cli_load.py` assembles these; `orchestrator.LoadRun` is the entry point for scripts.
"""
