"""The CLI's commands; each module has ``register(subparsers)`` setting ``run``."""

from . import bundle, check, decide, dev, evaluate, gateway, serve, test

COMMANDS = (serve, dev, decide, check, evaluate, gateway, test, bundle)
