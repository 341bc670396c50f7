"""The memory manager: agents' durable memories, hybrid search, and A-MEM agentic memory."""
