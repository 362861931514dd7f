"""``python -m agent.api.openapi > docs/openapi.json``: print the API's OpenAPI document as committed."""

from __future__ import annotations

import sys

from agent.api.app import openapi_document

if __name__ == "__main__":
    sys.stdout.write(openapi_document())
