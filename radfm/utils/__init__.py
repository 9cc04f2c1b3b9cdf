"""Small helpers shared across the toolkit (standard library only, so any part may import them)."""
