"""The offline mini GLUE pool for text-to-text models: a tiny T5, full and LoRA fine-tunes per task."""
