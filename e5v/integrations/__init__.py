"""Adapters for the frameworks users build on (LangChain, LlamaIndex): each a small module over one
``EmbeddingSource`` (a local ``E5V`` or an e5v server), so no second data path exists. Optional extras:
``pip install "e5v[langchain]"`` / ``"e5v[llama-index]"``."""
