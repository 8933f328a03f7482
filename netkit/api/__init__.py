"""netkit's public Python API, one module per topic; import the names from ``netkit`` itself
(``from netkit import echo_server``), which exports them lazily (see netkit/__init__.py).

This layer only composes ``netkit.net`` and ``netkit.core``: it imports nothing from
``netkit.commands`` or ``netkit.console`` (tests/test_layers.py), so the CLI and the API share
the same internals.
"""
