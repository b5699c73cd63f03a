"""A test double: an in-process Flower ``Grid`` (ServerApp and ClientApp in one process).

:class:`LocalGrid` implements Flower's :class:`~flwr.serverapp.Grid` by handing every
pushed message straight to a :class:`~flwr.clientapp.ClientApp` with the destination
node's :class:`~flwr.app.Context` (partition id in its node config, as in Flower's
simulation engine) and keeping the reply until it is pulled. An exception in the
ClientApp becomes an error reply, as in Flower.

It gives deterministic tests of the coordinator against the real ClientApp (including
injected faults through ``intercept``), without Ray. Tests import it as ``local_grid``
(``tests/`` is on ``sys.path`` through the root conftest, like ``serve_process``);
``fedpers simulate`` uses Flower's simulation engine instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

__all__ = ["Intercept", "LocalGrid"]

Intercept = Callable[[Message, Message], "Message | list[Message] | None"]
"""``intercept(request, reply)``: the reply the coordinator gets, several (a node that
answers twice), or ``None`` (lost, as after a round timeout)."""

_CLIENT_APP_ERROR = 1  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def _ensure_task_identity() -> None:
    """Flower's Message constructor needs the process's task identity (as a ServerApp has).

    Set it the way ``flwr.simulation.run_simulation`` does, unless already set.
    """
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    if TaskIdentity._run_id is None:
        TaskIdentity.run_id = 1
        TaskIdentity.task_id = 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID


class LocalGrid(Grid):  # type: ignore[misc]
    """A Grid whose nodes run ``client_app`` in this process.

    Args:
        client_app: the ClientApp every node runs.
        num_nodes: number of nodes (partition ids ``0 .. num_nodes - 1``).
        node_configs: optional extra node config per node (merged over the partition
            ids).
        seed: seeds the (64-bit, Flower-like) node ids.
        intercept: optional hook that may alter or drop each reply (fault injection).

    Example:
        >>> from flwr.clientapp import ClientApp
        >>> grid = LocalGrid(ClientApp(), num_nodes=3)
        >>> len(list(grid.get_node_ids()))
        3
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        node_configs: Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
        intercept: Intercept | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        ids: set[int] = set()
        while len(ids) < num_nodes:  # Flower's node ids are random unsigned 64-bit ints
            ids.add(int(rng.integers(2**63, 2**64 - 1, dtype=np.uint64)))
        self.client_app = client_app
        self.intercept = intercept
        self.contexts: dict[int, Context] = {}
        for partition, node_id in enumerate(sorted(ids)):
            config: dict[str, Any] = {"partition-id": partition, "num-partitions": num_nodes}
            if node_configs is not None:
                config.update(node_configs[partition])
            self.contexts[node_id] = Context(
                run_id=1, node_id=node_id, node_config=config, state=RecordDict(), run_config={}
            )
        _ensure_task_identity()
        self._replies: dict[str, list[Message]] = {}
        self._run: Any = None
        self.sent: list[Message] = []
        self.received: list[Message] = []

    def set_run(self, run: Any) -> None:
        """Remember the run (unused in process)."""
        self._run = run

    @property
    def run(self) -> Any:
        """The run set with :meth:`set_run`."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new message (as Flower's ``Message`` constructor)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The node ids, in partition order."""
        return list(self.contexts)

    def _handle(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            reply: Message = self.client_app(message=message, context=context)
        except Exception as exc:  # Flower turns ClientApp exceptions into error replies.
            reply = Message(
                Error(code=_CLIENT_APP_ERROR, reason=f"{type(exc).__name__}: {exc}"),
                reply_to=message,
            )
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node at once; keep the replies for pulling."""
        ids: list[str] = []
        for message in messages:
            if message.metadata.dst_node_id not in self.contexts:
                raise ValueError(f"no node {message.metadata.dst_node_id}")
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.sent.append(message)
            reply = self._handle(message)
            replies: Message | list[Message] | None = reply
            if self.intercept is not None:
                replies = self.intercept(message, reply)
            if replies is not None:
                batch = replies if isinstance(replies, list) else [replies]
                self._replies[message.metadata.message_id] = batch
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` that arrived (each returned once)."""
        out = [r for i in list(message_ids) if i in self._replies for r in self._replies.pop(i)]
        self.received.extend(out)
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull every reply (a dropped reply is simply missing)."""
        return self.pull_messages(self.push_messages(messages))
