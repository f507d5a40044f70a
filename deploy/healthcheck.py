"""The image's HEALTHCHECK: GET /health on this container's own port (HEALTH_PORT); exit 0 only on 200.

Standard library only (the final stage has no curl): urllib raises on a 503 ("engine down") or no answer.
"""

import os
import sys
import urllib.request

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{os.environ.get('HEALTH_PORT', '8000')}/health", timeout=4):
        pass
except Exception as exc:  # noqa: BLE001 - any failure is unhealthy; say which
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
