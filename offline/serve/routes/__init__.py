"""One router per resource: health and models, classification, OpenAI generation."""
