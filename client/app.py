"""The Flower ClientApp (Message API): a node hosting one device, or a cohort of devices.

Each device keeps everything private in its own :class:`~fedpers.client.store.EventStore`
(events, consent, private user vector, ledger). :func:`make_client_app` registers the
node's handlers: ``train`` and ``evaluate`` (:mod:`fedpers.client.replies`, which reads
the devices through :mod:`fedpers.client.hosted_devices` and trains them with
:mod:`fedpers.client.node_training`) and the ``query`` handshake. :data:`app` is the
ClientApp the Deployment Engine loads (``fedpers.client.app:app``).

Open stores are cached per process (:mod:`fedpers.client.store_pool`); nothing private
is kept in ``Context.state``, which Flower ships with every message.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedpers.client.hosted_devices import ClientSettings
from fedpers.client.replies import evaluate_message, hello_message, train_message
from fedpers.client.store_pool import POOL

__all__ = [
    "ClientSettings",
    "app",
    "make_client_app",
]


def make_client_app(
    settings: ClientSettings | None = None, *, mods: Sequence[Mod] = ()
) -> ClientApp:
    """A ClientApp with the fedpers handlers (``train``, ``evaluate``, ``query``).

    Args:
        settings: where the devices are; overridden per node by its node config.
        mods: Flower mods wrapping every handler (e.g. to capture egress in tests).

    Returns:
        The :class:`flwr.clientapp.ClientApp`.
    """
    base = settings or ClientSettings()
    client_app = ClientApp(mods=list(mods))

    @client_app.train()
    def _train(message: Message, context: Context) -> Message:
        _configure_process(base)
        return train_message(message, context, base)

    @client_app.evaluate()
    def _evaluate(message: Message, context: Context) -> Message:
        _configure_process(base)
        return evaluate_message(message, context, base)

    @client_app.query()
    def _query(message: Message, context: Context) -> Message:
        return hello_message(message, context, base)

    return client_app


def _configure_process(settings: ClientSettings) -> None:
    """One torch thread per process (2-core machines) and the store cache's bound."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    POOL.capacity = settings.max_open_stores


app = make_client_app()
"""The ClientApp for the Deployment Engine (``flwr run``): settings from the node config."""
