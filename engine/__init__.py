"""docvision engine: documents → page frames → late-interaction embeddings → Qdrant; schema-driven extraction.

The engine knows nothing about Lambda events; handlers/ adapt events to these functions.
"""

__version__ = "0.1.0"
