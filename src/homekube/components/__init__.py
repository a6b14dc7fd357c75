"""Components turn config + facts into ordered phases of Change / NoChange steps (pure)."""
