"""One module per subcommand: parse options, call net/ and core/, print through console.py."""
