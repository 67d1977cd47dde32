"""Directory sources: LDIF exports and (later) live LDAP, normalised into the core's Snapshot."""
