"""Delivery of the outbox: activation mails over SMTP and signed webhooks to the product.

Rows are written by `bridge.provision.apply` in the same transaction as the change that causes
them; the worker here claims due rows, delivers them and marks them, with retries. See
docs/operations/email-and-webhooks.md.
"""
