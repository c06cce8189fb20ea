"""moto's DynamoDB server, handling one request at a time.

moto_server serves requests on threads, and moto's TransactWriteItems checks
its conditions and then writes without a lock, so two concurrent transactions
on one item can both pass `attribute_not_exists` and both apply. DynamoDB
cancels one of them (TransactionConflict). Served one request at a time, every
transaction is atomic, as on DynamoDB, and the store's races are tested
against the semantics they rely on.

Usage: python moto_serial.py HOST PORT
"""

import os
import sys

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)
