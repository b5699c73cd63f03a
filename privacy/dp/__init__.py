"""fedpers.privacy.dp: differential-privacy mechanisms and accounting (pure maths).

- :mod:`.clipping`: whole-update L2 clipping, flatten/unflatten;
- :mod:`.noise`: Gaussian noise, its calibration (central, distributed shares, top-up)
  and derived random streams;
- :mod:`.pipeline`: the privacy pipeline of one round, written once;
- :mod:`.adaptive`: adaptive clipping (Andrew et al. 2021) and its accounting;
- :mod:`.accounting`: user-level and record-level epsilon, accountants and ledgers.
"""

# Each module lists its public names once, in its own __all__; the package re-exports them.
from fedpers.privacy.dp import accounting as _accounting
from fedpers.privacy.dp import adaptive as _adaptive
from fedpers.privacy.dp import clipping as _clipping
from fedpers.privacy.dp import noise as _noise
from fedpers.privacy.dp import pipeline as _pipeline
from fedpers.privacy.dp.accounting import *  # noqa: F403
from fedpers.privacy.dp.adaptive import *  # noqa: F403
from fedpers.privacy.dp.clipping import *  # noqa: F403
from fedpers.privacy.dp.noise import *  # noqa: F403
from fedpers.privacy.dp.pipeline import *  # noqa: F403

__all__: list[str] = [
    name
    for module in (_accounting, _adaptive, _clipping, _noise, _pipeline)
    for name in module.__all__
]
