"""Evaluation: scripted agents, `vln-gym evaluate`, reports and the SB3 pixel baseline."""
