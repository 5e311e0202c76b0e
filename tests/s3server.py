"""A real S3 protocol server on 127.0.0.1 for tests: moto in server mode, in a thread.

Requests go over real HTTP through pyarrow's and boto3's own S3 clients, so signing,
range reads, multipart uploads and copy+delete moves are exercised as against a real
endpoint (an in-process mock would bypass all of that).
"""

from __future__ import annotations

import logging

from moto.server import ThreadedMotoServer

# What Ray's own tests set for moto: fake credentials, a fixed region.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_PROXY": "127.0.0.1,localhost",
}


def start_s3_server() -> tuple[ThreadedMotoServer, str]:
    """Start moto on a free loopback port; returns the server and its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
