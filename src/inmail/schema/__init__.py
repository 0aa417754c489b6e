"""GraphQL types: one concept a module, each mapped from the domain with `from_domain`."""
