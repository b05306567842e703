"""Writing and verifying artifacts: all-or-nothing writes and content digests."""
