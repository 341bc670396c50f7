"""The storage manager (LSFS): agents' versioned files, retrieval and share links."""
