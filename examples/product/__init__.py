"""The reference product: a small Flask app that keeps its own users in step with bridge
through the product API (snapshot, change feed, signed webhooks) and signs people in with
bridge's verify-password. examples/product/README.md says how to run it."""
