"""Interactive load tests in locust's web UI: teller and authorizer users over gRPC.

Start a server (``make run``), then::

    .venv/bin/locust -f bench/locustfile.py --host 127.0.0.1:50051

and open http://127.0.0.1:8089. Locust users are gevent greenlets, so they use grpc's
synchronous API (with grpc's gevent support) and report each call to locust by hand.
For precise figures use ``make bench``: this file is for exploring by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from authq import wire
from authq.channel import AUTH_KEY
from authq.v1 import auth_pb2 as upb
from authq.v1 import auth_pb2_grpc, authorizer_pb2_grpc, teller_pb2_grpc
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from locust import User, between, events, task

from bench import workload
from teller_client.client import upload_chunks

grpc_gevent.init_gevent()


class GrpcUser(User):
    abstract = True
    channel: grpc.Channel

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.host, options=wire.CHANNEL_OPTIONS)

    def on_stop(self) -> None:
        self.channel.close()

    def timed(self, name: str, call: Callable[[], Any], idle: grpc.StatusCode | None = None) -> Any:
        """Runs one call and reports it to locust as a request named ``name``. A call
        ending with ``idle`` found nothing to do (no work within a wait): it is neither
        a failure nor a response time, so it is not reported."""
        start = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = call()
        except grpc.RpcError as exc:
            if idle is not None and exc.code() == idle:
                return None
            error = exc
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=result.ByteSize() if hasattr(result, "ByteSize") else 0,
            exception=error,
            context={},
        )
        return result


def login(channel: grpc.Channel, user: str, password: str) -> tuple[tuple[str, str], ...]:
    """Logs in (the server runs with --demo, as `make run` does) and returns the
    metadata that carries the token on every call."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    reply = stub.Login(upb.LoginRequest(user_id=user, password=password))
    return ((AUTH_KEY, f"Bearer {reply.token}"),)


class TellerUser(GrpcUser):
    """A teller: mostly submissions whose images were captured earlier (they reference
    the standard captures), some with one fresh ~200 KB capture."""

    wait_time = between(0.05, 0.2)
    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.stub = teller_pb2_grpc.TellerServiceStub(self.channel)
        self.metadata = login(self.channel, *workload.teller_login(id(self)))
        # The policy wants ID_FRONT, ID_BACK and VOUCHER with these requests, and they
        # reference the standard captures: store them first (identical bytes are
        # stored once, so every user may), or every submit is refused.
        for kind, data in workload.standard_captures():
            self.upload(kind, data)

    def upload(self, kind: str, data: bytes) -> cpb.ImageRef:
        stream: Iterator[cpb.ImageChunk] = iter(upload_chunks(kind, data))
        ref: cpb.ImageRef = self.stub.UploadImage(stream, metadata=self.metadata)
        return ref

    @task(4)
    def submit(self) -> None:
        request = workload.submit_request(tag="locust")
        self.timed("Submit", lambda: self.stub.Submit(request, metadata=self.metadata))

    @task(1)
    def submit_with_image(self) -> None:
        capture = workload.unique_jpeg(0)
        ref = self.timed("UploadImage 200 KB", lambda: self.upload("ID_FRONT", capture))
        if ref is None:
            return
        # The fresh ID_FRONT, and the standard captures for the other kinds.
        request = workload.submit_request(tag="locust", uploaded=1)
        request.images.append(cpb.ImageRef(kind=ref.kind, sha256=ref.sha256))
        self.timed("Submit 1 image", lambda: self.stub.Submit(request, metadata=self.metadata))


class AuthorizerUser(GrpcUser):
    """An authorizer: takes the next item (unary Next) and approves it."""

    wait_time = between(0.0, 0.05)
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.stub = authorizer_pb2_grpc.AuthorizerServiceStub(self.channel)
        self.metadata = login(self.channel, *workload.authorizer_login(id(self)))

    @task
    def take_and_decide(self) -> None:
        # Next waits for work; nothing within 2 s is an empty queue, not a failure.
        offer = self.timed(
            "Next",
            lambda: self.stub.Next(apb.NextRequest(), metadata=self.metadata, timeout=2.0),
            idle=grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        if offer is None:
            return
        decide = apb.DecideRequest(
            request_id=offer.request.request_id,
            fencing_token=offer.lease.fencing_token,
            outcome=apb.OUTCOME_APPROVE,
        )
        self.timed("Decide", lambda: self.stub.Decide(decide, metadata=self.metadata))
