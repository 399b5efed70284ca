"""The demo ecosystem: a population register and a benefits agency on one machine."""
