"""Offline mini causal-LM pool (mini-llm_TA16): synthetic generative tasks, an offline tokenizer, a tiny Llama.

Nothing heavy is imported here: `tasks` needs only the standard library (`datasets` is imported when
data sets are written), and `tokenizer` pulls in `tokenizers`/`transformers` only when imported itself.
"""
