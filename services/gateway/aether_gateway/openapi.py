"""`python -m aether_gateway.openapi`: print the gateway's OpenAPI document (ui/openapi.json).

The Mission Board's TypeScript types are generated from it (`make api-types`), and a test fails
when the committed copy and the app disagree.
"""

import json
import sys

from .main import create_app
from .settings import GatewaySettings


def document() -> str:
    # The document does not depend on keys; without any, an app with authentication on cannot be made.
    app = create_app(GatewaySettings(auth=False))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(document())
