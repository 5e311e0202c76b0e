"""Shared pytest fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from jobs.bench_cluster import RAY_ENV

from tests.s3server import S3_ENV, start_s3_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A loopback S3 server for the session, with AWS_ENDPOINT_URL and fake credentials set."""
    server, endpoint = start_s3_server()
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            env.setenv(key, value)
        env.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """`s3://<fresh bucket>` on the loopback server (created with boto3)."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def ray_runtime(s3_endpoint: str) -> Iterator[None]:
    """An embedded Ray for the tests of one module (started once: it takes seconds).

    It starts after the session's loopback S3 server has set its environment, for two reasons:
    Ray's workers keep the environment Ray started with, and a module may reach the server only
    after an earlier test started Ray; and this fixture's teardown restores the environment it
    found, which would otherwise unset the server's credentials for every later module."""
    import ray

    with pytest.MonkeyPatch.context() as env:
        for key, value in RAY_ENV.items():
            env.setenv(key, value)
        env.delenv("RAY_ADDRESS", raising=False)
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
