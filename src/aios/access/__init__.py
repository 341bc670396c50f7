"""The access manager: who an agent is (tokens), what it may touch (ownership, grants, groups), what a person
must approve first (irreversible operations), and an audit log of every decision."""
