"""Several server processes on one PostgreSQL database: the supervisor that runs them, the leader that pushes and
wakes devices once for all, and the notices that keep every process's admin caches in step.
"""
