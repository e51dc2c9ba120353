"""Extra ``autolab`` subcommands, each in its own module (``clean``, ``cancel``).

Each module exposes one click command; ``autolab/cli.py`` registers it with
``main.add_command(...)``.
"""
