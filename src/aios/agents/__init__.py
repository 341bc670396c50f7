"""Example agents. Each is a plain program that talks to the kernel only through :mod:`aios.sdk`."""
