"""dewy: a pull-based deployment supervisor for hosts without Kubernetes."""

__version__ = "0.1.0"
