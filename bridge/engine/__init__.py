"""The sync engine: a run (read, plan, check, write groups, apply, record), the delta, explain,
the tenant re-plan, and the sources it reads (the only engine module importing the directory)."""
