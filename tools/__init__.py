"""Command-line tools: dead-letter queue inspection and redrive, and the two-path comparison."""
