"""Declaring the topology of aether_contracts.topology on a NATS server, and checking it.

`ensure_topology` creates or brings in line the stream, the KV buckets, the object store and the
durable consumers (one party runs it: `aether_core.service.declare_topology`, as the NATS user
`topology`); `missing` tells a service what it uses that is not declared yet. The shapes, names
and settings are the contracts'; this module is the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, NotFoundError

from aether_contracts.topology import (
    BUCKETS,
    STREAM,
    WORKSPACE_BUCKET,
    ConsumerSpec,
    consumers,
    stream_config,
)

log = logging.getLogger("aether.topology")


async def ensure_topology(
    js: JetStreamContext,
    agent_types: Iterable[str] = (),
    *,
    replicas: int = 1,
) -> None:
    """Create or update the stream, the KV buckets and the durable consumers. Idempotent."""
    config = stream_config(replicas)
    try:
        await js.add_stream(config=config)
    except BadRequestError:
        await js.update_stream(config=config)

    for bucket in BUCKETS:
        kv_config = bucket.config(replicas)
        try:
            await js.create_key_value(config=kv_config)
        except BadRequestError:
            # Exists with other settings (an older release): bring it in line.
            info = await js.stream_info(f"KV_{bucket.name}")
            info.config.max_age = bucket.ttl_s or 0
            info.config.max_msgs_per_subject = bucket.history
            info.config.allow_direct = bool(kv_config.direct)
            await js.update_stream(config=info.config)

    await ensure_object_store(js, replicas)

    for spec in consumers(agent_types):
        await ensure_consumer(js, spec)


async def missing(
    js: JetStreamContext, buckets: Iterable[str] = (), specs: Iterable[ConsumerSpec] = ()
) -> list[str]:
    """What of the topology a service uses is not declared yet: empty when it can start."""
    absent = []
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        return [f"stream {STREAM}"]
    for bucket in buckets:
        try:
            await js.stream_info(f"KV_{bucket}")
        except NotFoundError:
            absent.append(f"bucket {bucket}")
    for spec in specs:
        try:
            await js.consumer_info(STREAM, spec.durable)
        except NotFoundError:
            absent.append(f"consumer {spec.durable}")
    return absent


async def ensure_object_store(js: JetStreamContext, replicas: int = 1) -> None:
    config = ObjectStoreConfig(
        bucket=WORKSPACE_BUCKET,
        description="workspace files and task repositories (see aether_contracts.workspace)",
        storage=StorageType.FILE,
        replicas=replicas,
    )
    try:
        await js.create_object_store(WORKSPACE_BUCKET, config=config)
    except BadRequestError:
        pass  # exists already (its settings are the defaults, nothing to bring in line)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create the durable consumer, or bring an existing one's mutable settings in line."""
    try:
        await js.add_consumer(STREAM, config=spec.config())
    except BadRequestError as exc:
        # An immutable setting changed between releases; the consumer keeps working as it is.
        log.warning("consumer %s kept its existing configuration: %s", spec.durable, exc.description)
