"""Ships log records to a vigil collector with python-logging-loki (the Loki
push API, JSON).

usage: loki_push.py URL    (URL = http://127.0.0.1:PORT/loki/api/v1/push)

Exits non-zero if any push was not answered 204.
"""
import logging
import sys

import logging_loki

errors = []


class Handler(logging_loki.LokiHandler):
    def handleError(self, record):
        errors.append(sys.exc_info()[1])


handler = Handler(url=sys.argv[1], tags={"application": "billing"}, version="1")
log = logging.getLogger("billing.worker")
log.propagate = False
log.setLevel(logging.DEBUG)
log.addHandler(handler)
log.info("invoice 1 sent")
log.warning("invoice 2 delayed", extra={"tags": {"customer": "acme"}})
log.error("invoice 3 failed: card declined")
if errors:
    sys.exit(f"push failed: {errors}")
print("3 records pushed")
