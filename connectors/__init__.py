"""arrears: connectors."""
