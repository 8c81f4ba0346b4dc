"""The authq API: generated protobuf/gRPC code (``authq.v1``) and the wire helpers
that servers and clients share (``authq.wire``)."""
