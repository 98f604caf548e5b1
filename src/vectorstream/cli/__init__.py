"""The ``vectorstream`` command: thin over the library, one module per command group."""
