"""The CLI's commands; each module has ``register(subparsers)`` setting ``run``."""

from . import check, dev, evaluate, serve

COMMANDS = (serve, dev, check, evaluate)
