"""Which Flower node hosts which device, from the nodes' handshake replies."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import Message

from fedpers.client.protocol import NodeInfo
from fedpers.client.wire import NODE
from fedpers.privacy.errors import ConfigError, DataError

__all__ = ["NodeLayout"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLayout:
    """Which Flower node hosts which device.

    Attributes:
        mode: ``"node"`` (one device per node) or ``"cohort"`` (devices spread over nodes
            by ``device % len(nodes)``).
        nodes: node ids ordered by partition id.
        device_node: node mode only: device id -> node id.
    """

    mode: str
    nodes: tuple[int, ...]
    device_node: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def from_hello(cls, mode: str, replies: Iterable[Message]) -> NodeLayout:
        """Build the layout from the nodes' handshake replies (``node`` MetricRecord).

        A reply whose ``node`` record is malformed is left out (with a warning).

        Raises:
            ConfigError: when no node answered, or in node mode two nodes claim a device.
        """
        found: list[tuple[int, int, int]] = []
        for reply in replies:
            if reply.has_error() or NODE not in reply.content.metric_records:
                continue
            try:
                info = NodeInfo.decode(dict(reply.content.metric_records[NODE]))
            except DataError as exc:
                logger.warning("node %s: bad handshake: %s", reply.metadata.src_node_id, exc)
                continue
            found.append((info.partition_id, info.device_id, reply.metadata.src_node_id))
        if not found:
            raise ConfigError("no node answered the handshake")
        found.sort()
        nodes = tuple(node for _, _, node in found)
        if mode == "cohort":
            return cls("cohort", nodes)
        device_node: dict[int, int] = {}
        for _, device, node in found:
            if device in device_node:
                raise ConfigError(f"two nodes claim device {device}")
            device_node[device] = node
        return cls("node", nodes, device_node)

    def node_of(self, device: int) -> int | None:
        """The node hosting ``device`` (``None`` when no node does)."""
        if self.mode == "cohort":
            return self.nodes[device % len(self.nodes)]
        return self.device_node.get(device)

    def group(self, devices: Iterable[int]) -> tuple[dict[int, list[int]], list[int]]:
        """Devices grouped by hosting node, and the devices no node hosts."""
        groups: dict[int, list[int]] = defaultdict(list)
        orphans: list[int] = []
        for d in devices:
            node = self.node_of(int(d))
            if node is None:
                orphans.append(int(d))
            else:
                groups[node].append(int(d))
        return dict(groups), orphans
