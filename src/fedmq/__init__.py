"""fedmq: the command line, the standalone runner and the local multi-party launcher."""
