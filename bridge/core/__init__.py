"""Pure provisioning logic: lifecycle, mapping rules and the planner. No I/O, no clock."""
