"""eventscaler: a standalone, event-driven autoscaler for Kubernetes Deployments."""

__version__ = "0.1.0"
