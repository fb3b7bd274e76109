"""Serving fine-tuned models: many X-PEFT profiles from one base model and one bank."""
