"""``aios terminal``: an interactive shell over a running kernel, built on its HTTP API through the SDK only.

``shell.py`` is the loop, ``commands.py`` the command table, ``actions.py`` the model acting through tools
(each call shown, irreversible ones confirmed first), ``top.py`` the live scheduler view, ``completion.py``
what Tab offers, ``render.py`` how results look.
"""

from aios.terminal.shell import Settings, run_terminal

__all__ = ["Settings", "run_terminal"]
