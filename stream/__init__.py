"""stream room."""
