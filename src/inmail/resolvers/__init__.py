"""Query, Mutation and Subscription roots: parse arguments, call a service, map the result."""
