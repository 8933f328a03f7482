"""Sans-I/O core: bytes in, events and bytes out. Imports no socket, asyncio, ssl or rich."""
