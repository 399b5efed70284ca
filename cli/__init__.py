"""The xgate command line: click commands only."""
