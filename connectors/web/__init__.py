"""arrears: connectors/web: the nginx and apache backends of the web service (see connectors.web.common)."""

__all__: list[str] = []
