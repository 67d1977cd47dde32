"""Carrying out plans: account changes with their audit events and outbox messages."""
