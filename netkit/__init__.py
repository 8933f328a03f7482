"""netkit: one command-line toolbox for network work."""

__version__ = "0.1.0"
