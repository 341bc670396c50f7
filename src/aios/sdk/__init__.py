"""The agent-side SDK: functions an agent calls to make syscalls to a kernel over HTTP.

Light by design: it imports httpx and the standard library only, never torch or transformers.
The kernel URL is ``base_url`` when given, else ``$AIOS_KERNEL_URL``, else ``http://localhost:8000``.
"""

from aios.sdk.access import (
    answer_request,
    audit_log,
    grant_permission,
    list_permissions,
    request_permission,
    revoke_permission,
)
from aios.sdk.agents import (
    AgentLogs,
    AgentProcess,
    AgentStatus,
    agent_logs,
    agent_status,
    cancel_agent,
    list_agents,
    submit_agent,
    wait_agent,
)
from aios.sdk.llm import llm_chat, llm_chat_with_json_output, llm_chat_with_tool_call_output
from aios.sdk.memory import (
    MemoryNote,
    MemoryResponse,
    SearchResult,
    create_agentic_memory,
    create_memory,
    delete_memory,
    get_memory,
    search_memories,
    update_memory,
)
from aios.sdk.storage import (
    DirEntry,
    FileOperation,
    FileOperationsResponse,
    FileVersion,
    RetrievedFile,
    StorageResponse,
    create_dir,
    create_file,
    delete_dir,
    delete_file,
    file_history,
    list_dir,
    llm_operate_file,
    mount,
    read_file,
    retrieve,
    retrieve_file,
    roll_back,
    rollback_file,
    share_file,
    unshare_file,
    write_file,
)
from aios.sdk.tools import ToolInfo, ToolResponse, ToolResult, call_tool, get_tool, list_tools, llm_call_tool
from aios.sdk.transport import AIOSError, kernel_url
from aios.sdk.types import LLMResponse, Timings, ToolCall

__all__ = [
    "AIOSError",
    "LLMResponse",
    "Timings",
    "ToolCall",
    "kernel_url",
    "llm_chat",
    "llm_chat_with_json_output",
    "llm_chat_with_tool_call_output",
    # memory
    "MemoryNote",
    "MemoryResponse",
    "SearchResult",
    "create_agentic_memory",
    "create_memory",
    "delete_memory",
    "get_memory",
    "search_memories",
    "update_memory",
    # storage
    "DirEntry",
    "FileOperation",
    "FileOperationsResponse",
    "FileVersion",
    "RetrievedFile",
    "StorageResponse",
    "create_dir",
    "create_file",
    "delete_dir",
    "delete_file",
    "file_history",
    "list_dir",
    "llm_operate_file",
    "mount",
    "read_file",
    "retrieve",
    "retrieve_file",
    "roll_back",
    "rollback_file",
    "share_file",
    "unshare_file",
    "write_file",
    # tools
    "ToolInfo",
    "ToolResponse",
    "ToolResult",
    "call_tool",
    "get_tool",
    "list_tools",
    "llm_call_tool",
    # agents
    "AgentLogs",
    "AgentProcess",
    "AgentStatus",
    "agent_logs",
    "agent_status",
    "cancel_agent",
    "list_agents",
    "submit_agent",
    "wait_agent",
    # access
    "answer_request",
    "audit_log",
    "grant_permission",
    "list_permissions",
    "request_permission",
    "revoke_permission",
]
