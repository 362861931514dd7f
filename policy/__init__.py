"""arrears: policy."""
