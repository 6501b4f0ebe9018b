"""The `aether` command line: the gateway's REST and streaming API from a terminal (never NATS)."""
