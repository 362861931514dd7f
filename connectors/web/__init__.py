"""arrears: connectors/web."""
