"""arrears: connectors/mail."""
