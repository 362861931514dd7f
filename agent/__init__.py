"""arrears: agent."""
