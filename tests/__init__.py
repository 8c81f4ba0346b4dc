"""authq test suite: real gRPC, real Redis."""
