"""Data: the embedded demo generator, description parsing, and preparation into audiocraft manifests."""
