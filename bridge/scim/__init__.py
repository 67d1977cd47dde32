"""The SCIM 2.0 channel (RFC 7643/7644): identity providers push Users and Groups into bridge."""
