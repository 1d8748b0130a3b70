"""fedcrypto: the cryptography fedmq runs on. Pure functions, numpy in and out, no IO.

The Paillier API is re-exported here (from `fedcrypto.paillier`, whose `__all__` is the one
list of its names); PSI, secure aggregation and signatures live in `fedcrypto.psi`,
`fedcrypto.secagg` and `fedcrypto.signing`.
"""

from . import paillier
from .paillier import *  # noqa: F403

__all__: list[str] = []
__all__ += paillier.__all__
