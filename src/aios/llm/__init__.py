"""LLM cores (the models), the router that picks one per syscall, and the LLM syscall handler."""
