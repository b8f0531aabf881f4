"""moto's S3 server for tests, serving one request at a time (so a conditional PUT's
check and write are atomic, as S3's are), on an ephemeral port of HOST, with BUCKET
created. Prints "moto listening on HOST:PORT" when ready.

    python moto-server.py HOST BUCKET
"""
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

host, bucket = sys.argv[1], sys.argv[2]
s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(bucket, "us-east-1")
app = DomainDispatcherApplication(create_backend_app)
server = make_server(host, 0, app, threaded=False)
print(f"moto listening on {host}:{server.server_port}", flush=True)
server.serve_forever()
