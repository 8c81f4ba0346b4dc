"""The gRPC layer: thin servicers that turn protobuf into calls on the Center and
domain errors into gRPC status codes. No business rule lives here."""
