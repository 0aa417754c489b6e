"""InMail credits service: a GraphQL API over MongoDB."""

__version__ = "0.1.0"
