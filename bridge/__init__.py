"""bridge: an identity provisioning bridge (SCIM 2.0 server and directory sync) for SaaS products."""
