"""Reliability and security: many processes, crashes, a reference model, hostile input, access."""
