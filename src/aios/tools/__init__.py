"""The tool manager: tools agents call through the kernel (``query_type: tool``, ``llm_call_tool``)."""
