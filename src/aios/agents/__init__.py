"""Example agents, each a package in the AIOS/Cerebrum layout (``<name>/config.json`` and ``agent.py``) that the
kernel runs as ``example/<name>``, and the agent runtime (``runtime.py``, ``launch.py``, ``package.py``,
``hub.py``). An agent talks to the kernel only through :mod:`aios.sdk`."""
