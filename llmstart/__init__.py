__version__ = "0.1.0"

from .core import quiet_known_noise as _quiet_known_noise   # before any module imports torchao or Lightning

_quiet_known_noise()
