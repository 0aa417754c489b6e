"""Use cases: each one reads like the rule it carries out."""
