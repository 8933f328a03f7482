"""The only code that touches sockets, the event loop or ssl."""
