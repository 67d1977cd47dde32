"""Persistence: tables, migrations, engine set-up and the queries the rest of bridge uses."""
