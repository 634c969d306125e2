"""The CLI's commands; each module has ``register(subparsers)`` setting ``run``."""

from . import bundle, check, decide, dev, evaluate, serve

COMMANDS = (serve, dev, decide, check, evaluate, bundle)
