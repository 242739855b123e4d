"""The local AWS emulator: moto's server (DynamoDB + SQS), with one fix of fidelity.

DynamoDB applies each request to an item atomically: a conditional update's condition is checked and
its write made as one step, so concurrent `UpdateItem`s on one counter never both pass a cap. moto's
server runs requests on threads with no lock around its DynamoDB models, so two of them can
interleave and both pass (seen: the budget contract test counted 8 spends under a cap that allowed
7). Here DynamoDB requests (short, never long-polled) run one at a time; SQS requests, which may
long-poll, stay concurrent. Usage: moto-server.py HOST PORT (infra/local-aws.sh starts it).
"""

import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
moto = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def app(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with dynamodb:
            # The whole answer is produced inside the lock.
            return list(moto(environ, start_response))
    return moto(environ, start_response)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
