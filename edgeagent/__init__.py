"""edgeagent: latency-bound real-time OpenVINO inference on ZeroMQ video frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Publisher", "__version__"]

if TYPE_CHECKING:
    from edgeagent.publisher import Publisher


def __getattr__(name: str) -> Any:
    # Lazy: `import edgeagent` stays cheap for publishers that never load OpenVINO.
    if name == "Publisher":
        from edgeagent.publisher import Publisher

        return Publisher
    raise AttributeError(name)
