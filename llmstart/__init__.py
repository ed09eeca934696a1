__version__ = "0.1.0"

from . import core as _core

_core.quiet_known_noise()      # before any module imports torchao or Lightning
_core.clean_stale_scratch()    # temporary folders that processes which could not clean up left behind
