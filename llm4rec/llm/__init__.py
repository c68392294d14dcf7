"""The LLM side: prompt samples, backbones, LoRA training, yes/no scoring, adapters on disk."""
