"""fedpers.privacy.secagg: additive secure aggregation with TenSEAL CKKS.

Devices encrypt their clipped, noised updates under a public context; the coordinator
(and cohort nodes) sum ciphertexts without any secret key; a separate key holder decrypts
only the sum. See ``docs/secure-aggregation.md`` for the threat model and costs.
"""

# Each module lists its public names once, in its own __all__; the package re-exports them.
from fedpers.privacy.secagg import aggregator as _aggregator
from fedpers.privacy.secagg import describe as _describe
from fedpers.privacy.secagg import device as _device
from fedpers.privacy.secagg import keyholder as _keyholder
from fedpers.privacy.secagg import keys as _keys
from fedpers.privacy.secagg import packing as _packing
from fedpers.privacy.secagg import params as _params
from fedpers.privacy.secagg import payload as _payload
from fedpers.privacy.secagg.aggregator import *  # noqa: F403
from fedpers.privacy.secagg.describe import *  # noqa: F403
from fedpers.privacy.secagg.device import *  # noqa: F403
from fedpers.privacy.secagg.keyholder import *  # noqa: F403
from fedpers.privacy.secagg.keys import *  # noqa: F403
from fedpers.privacy.secagg.packing import *  # noqa: F403
from fedpers.privacy.secagg.params import *  # noqa: F403
from fedpers.privacy.secagg.payload import *  # noqa: F403

__all__: list[str] = [
    name
    for module in (_aggregator, _describe, _device, _keyholder, _keys, _packing, _params, _payload)
    for name in module.__all__
]
