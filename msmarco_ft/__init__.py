"""msmarco-ft: fine-tune and evaluate dense passage retrievers on MS MARCO."""

__version__ = "0.1.0"
