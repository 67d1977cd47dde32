"""Pages and small APIs for people and the product: activation links, password checks."""
