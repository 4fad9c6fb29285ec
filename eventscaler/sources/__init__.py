"""Queue sources: one module per queue service, each the only importer of its SDK."""

import sys

# The Azure SDK imports aiohttp, when it is installed (the kubernetes client requires it), only to
# recognise its asyncio transport, which the daemon never uses: 0.12 s of start-up and ~8 MiB of
# resident memory. Declared absent here, before any source module imports the SDK.
sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
