"""ctscribe chatapp: configuration, pipeline, LLM, report/VQA engines, training, evaluation, CLI and the Gradio app."""

__version__ = "0.1.0"
